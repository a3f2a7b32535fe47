// Package delcache is what a DEL needs without the API server: the meta-plugin's delegate
// cache (the record ADD writes before it runs any delegate) and running the recorded
// delegates' DEL through libcni. It imports nothing of Kubernetes, so the thick-mode shim can
// delete a pod by itself when the node agent does not answer; the meta-plugin (thin binary and
// agent) writes and reads the same files through it, so either side can delete what the other
// attached.
package delcache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/multinet-io/multinet/internal/fsutil"
)

// Defaults shared by the meta-plugin and the shim.
const (
	DefaultBinDir   = "/opt/cni/bin"
	DefaultCacheDir = "/var/lib/cni/multinet"
)

// EnvDepth is set on every delegate the meta-plugin execs; a meta-plugin that finds it set was
// started by a meta-plugin and refuses to attach anything.
const EnvDepth = "MULTINET_DEPTH"

// Delegate is one network the meta-plugin runs for a pod: everything DEL needs is in here, so
// it is cached before ADD runs it and DEL works without the API server.
type Delegate struct {
	// Name is what network-status calls it: "<ns>/<nad>" for a NAD, the conf name otherwise.
	Name      string `json:"name"`
	IfName    string `json:"ifname"`
	IsDefault bool   `json:"default,omitempty"`
	// Conf is a conflist (single confs are wrapped), with deviceID and cni-args injected.
	Conf           json.RawMessage        `json:"conf"`
	CapabilityArgs map[string]interface{} `json:"capabilityArgs,omitempty"`
	ResourceName   string                 `json:"resourceName,omitempty"`
	DeviceID       string                 `json:"deviceID,omitempty"`
	DefaultRoute   []string               `json:"defaultRoute,omitempty"`
	// Auxiliary marks the auxiliaryCNIChainName chain: run and deleted like the others, but
	// not a network of the pod (no network-status entry, no routes of its own).
	Auxiliary bool `json:"auxiliary,omitempty"`
	// Args are CNI_ARGS for this delegate only: the selection's mac and ips as MAC= and IP=,
	// which Multus passes besides the capabilities (NADs without capabilities rely on them).
	Args [][2]string `json:"args,omitempty"`
}

// List parses the delegate's conflist.
func (d *Delegate) List() (*libcni.NetworkConfigList, error) {
	l, err := libcni.ConfListFromBytes(d.Conf)
	if err != nil {
		return nil, fmt.Errorf("network %s: %w", d.Name, err)
	}
	return l, nil
}

// RuntimeConf is the libcni runtime conf for the delegate: the pod's CNI_ARGS, then its own.
func (d *Delegate) RuntimeConf(containerID, netns string, podArgs [][2]string) *libcni.RuntimeConf {
	args := podArgs
	if len(d.Args) > 0 {
		args = append(append([][2]string(nil), podArgs...), d.Args...)
	}
	return &libcni.RuntimeConf{ContainerID: containerID, NetNS: netns, IfName: d.IfName, Args: args, CapabilityArgs: d.CapabilityArgs}
}

// Entry is what ADD records, before running any delegate, so that DEL can undo it after a
// restart, a reboot or with the API server gone.
type Entry struct {
	ContainerID  string      `json:"containerID"`
	NetNS        string      `json:"netns"`
	IfName       string      `json:"ifname"`
	PodNamespace string      `json:"podNamespace"`
	PodName      string      `json:"podName"`
	PodUID       string      `json:"podUID,omitempty"`
	CNIArgs      [][2]string `json:"cniArgs,omitempty"`
	Delegates    []Delegate  `json:"delegates"`
}

// Path is the container's record under cacheDir.
func Path(cacheDir, containerID string) string {
	return filepath.Join(cacheDir, "delegates", containerID+".json")
}

// Save writes the record atomically (fsynced before it is renamed into place).
func Save(cacheDir string, e *Entry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(Path(cacheDir, e.ContainerID), b, 0o600); err != nil {
		return fmt.Errorf("delegate cache: %w", err)
	}
	return nil
}

// Load returns (nil, nil) when there is no record for the container.
func Load(cacheDir, containerID string) (*Entry, error) {
	if !safeID(containerID) {
		return nil, fmt.Errorf("delegate cache: container ID %q: not a plain name", containerID)
	}
	b, err := os.ReadFile(Path(cacheDir, containerID))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("delegate cache: %w", err)
	}
	var e Entry
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("delegate cache %s is corrupt: %w", Path(cacheDir, containerID), err)
	}
	return &e, nil
}

// safeID refuses a container ID that would name a file outside the cache directory.
func safeID(id string) bool {
	return id != "" && !strings.ContainsAny(id, `/\`) && id != "." && id != ".."
}

// Remove drops the record and fsyncs the directory: a DEL reported done must not find its
// record back after a crash and run the delegates' DEL again.
func Remove(cacheDir, containerID string) {
	if safeID(containerID) {
		fsutil.Remove(Path(cacheDir, containerID))
	}
}

// Containers lists the container IDs with a record (for GC).
func Containers(cacheDir string) []string {
	entries, _ := os.ReadDir(filepath.Join(cacheDir, "delegates"))
	var ids []string
	for _, e := range entries {
		if n := e.Name(); filepath.Ext(n) == ".json" {
			ids = append(ids, n[:len(n)-len(".json")])
		}
	}
	return ids
}

// OwnType tells the plugin types that are the meta-plugin itself, its shim or agent (any type
// named multinet*), or Multus, thin or thick (multus*): none of them may run as a delegate.
func OwnType(t string) bool {
	return strings.HasPrefix(t, "multinet") || strings.HasPrefix(t, "multus")
}

// OwnPluginType returns the first plugin type in a conf or conflist that is ours ("" if none).
// Every "type" anywhere counts, not only the plugins': a plugin execs others by type too (IPAM
// as "ipam": {"type": ...}, flannel's "delegate"), with the same conf on stdin.
func OwnPluginType(conf []byte) string {
	var v interface{}
	if json.Unmarshal(conf, &v) != nil {
		return ""
	}
	return ownTypeIn(v)
}

func ownTypeIn(v interface{}) string {
	switch v := v.(type) {
	case map[string]interface{}:
		for k, x := range v {
			// encoding/json matches keys case-insensitively, and so do plugins built on it.
			if t, ok := x.(string); ok && strings.EqualFold(k, "type") && OwnType(t) {
				return t
			}
			if t := ownTypeIn(x); t != "" {
				return t
			}
		}
	case []interface{}:
		for _, x := range v {
			if t := ownTypeIn(x); t != "" {
				return t
			}
		}
	}
	return ""
}

// ParseDepth reads a value of EnvDepth: how many meta-plugins run above this one. A value that
// is not a count still says "nested" (1), so a loop stops whatever wrote it.
func ParseDepth(s string) int {
	if s == "" {
		return 0
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 1
	}
	return n
}

// DepthExec marks every delegate it execs with EnvDepth, one more than ours.
type DepthExec struct {
	invoke.Exec
	Depth int
}

// ExecPlugin runs the plugin with EnvDepth replaced by Depth+1.
func (e DepthExec) ExecPlugin(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	env := make([]string, 0, len(environ)+1)
	for _, kv := range environ {
		if !strings.HasPrefix(kv, EnvDepth+"=") {
			env = append(env, kv)
		}
	}
	return e.Exec.ExecPlugin(ctx, path, stdin, append(env, EnvDepth+"="+strconv.Itoa(e.Depth+1)))
}

// DefaultExec execs plugin binaries, their stderr to ours.
func DefaultExec() invoke.Exec {
	return &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
}

// BinPath is where delegates are looked up: binDir first, then the runtime's CNI_PATH.
func BinPath(binDir, cniPath string) []string {
	var p []string
	if binDir != "" {
		p = append(p, filepath.SplitList(binDir)...)
	}
	p = append(p, filepath.SplitList(cniPath)...)
	if len(p) == 0 {
		p = []string{DefaultBinDir}
	}
	return p
}

// CNI is the libcni runner the meta-plugin uses: its results cache lives under cacheDir.
func CNI(binPath []string, cacheDir string, exec invoke.Exec) *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir(binPath, cacheDir+"/results", exec)
}

// Del removes every attachment recorded for the container, in reverse, and reports all
// failures; the record is dropped only when every delegate's DEL passed (the runtime retries
// DEL and must find the same list). A missing record falls back to what libcni recorded; a
// missing netns is not an error (delegates release IPAM and host-side state without it). It
// returns the record it worked from (nil if none), so the caller can name the pod.
// Delegates run through exec from binPath (exec's FindInPath also decides which plugins are
// missing: a daemon may serve some in-process).
func Del(ctx context.Context, binPath []string, exec invoke.Exec, cacheDir, containerID, netns string, log *slog.Logger) (*Entry, error) {
	cni := CNI(binPath, cacheDir, exec)
	entry, err := Load(cacheDir, containerID)
	if err != nil {
		// A corrupt cache must not block pod deletion forever; libcni's cache still knows
		// what ran.
		log.Error("ignoring delegate cache", "err", err)
	}
	if netns != "" {
		if _, err := os.Stat(netns); err != nil {
			netns = ""
		}
	}
	if entry == nil {
		if err := delFromLibcniCache(ctx, cni, containerID, netns); err != nil {
			return nil, err
		}
		// A corrupt cache has served its turn: left behind, GC would find it forever.
		Remove(cacheDir, containerID)
		return nil, nil
	}
	var errs []error
	for i := len(entry.Delegates) - 1; i >= 0; i-- {
		d := entry.Delegates[i]
		if t := OwnPluginType(d.Conf); t != "" {
			// Recorded by a version that still ran them: running it now would hand the nested
			// instance the tenant's settings again.
			log.Error("not running a meta-plugin delegate on DEL", "network", d.Name, "type", t)
			continue
		}
		list, err := d.List()
		if err == nil {
			var missing []string
			if list, missing = withoutMissingPlugins(list, exec, binPath); len(missing) > 0 {
				RecordProblem(log, cacheDir, Problem{ContainerID: containerID, Pod: entry.PodNamespace + "/" + entry.PodName,
					Network: d.Name, IfName: d.IfName, Reason: fmt.Sprintf("DEL: plugin binaries %v not found in %v", missing, binPath),
					Left: fmt.Sprintf("whatever %v set up for this attachment (the rest of its chain was deleted)", missing)})
			}
			if len(list.Plugins) > 0 {
				err = cni.DelNetworkList(ctx, list, d.RuntimeConf(containerID, netns, entry.CNIArgs))
			}
			if err == nil {
				sweepCutLeases(list, log)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("network %s on %s: %w", d.Name, d.IfName, err))
		}
	}
	if len(errs) > 0 {
		return entry, fmt.Errorf("pod %s/%s: DEL: %w", entry.PodNamespace, entry.PodName, errors.Join(errs...))
	}
	Remove(cacheDir, containerID)
	log.Info("detached", "pod", entry.PodNamespace+"/"+entry.PodName, "networks", len(entry.Delegates))
	return entry, nil
}

// delFromLibcniCache handles a DEL whose delegate cache is gone (wiped state dir, or a DEL for
// a container we never saw): whatever libcni recorded as added for it is deleted.
func delFromLibcniCache(ctx context.Context, cni *libcni.CNIConfig, containerID, netns string) error {
	atts, err := cni.GetCachedAttachments(containerID)
	if err != nil || len(atts) == 0 {
		return nil
	}
	var errs []error
	for _, a := range atts {
		if OwnPluginType(a.Config) != "" {
			continue
		}
		list, err := libcni.ConfListFromBytes(a.Config)
		if err != nil {
			if pc, perr := libcni.NetworkPluginConfFromBytes(a.Config); perr == nil {
				list, err = libcni.ConfListFromConf(pc)
			}
		}
		if err == nil {
			err = cni.DelNetworkList(ctx, list, &libcni.RuntimeConf{ContainerID: containerID, NetNS: netns, IfName: a.IfName, Args: a.CniArgs, CapabilityArgs: a.CapabilityArgs})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("network %s on %s: %w", a.Network, a.IfName, err))
		}
	}
	return errors.Join(errs...)
}
