package meta

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/internal/pluginlog"
	"github.com/multinet-io/multinet/meta/delcache"
	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/podresources"
)

// Versions the meta-plugin speaks; delegates of any older version work through libcni.
var Versions = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

// Plugin runs one CNI command. Its fields are the seams: tests and a future node daemon fill
// them in-process; the binary builds them from the netconf with New.
type Plugin struct {
	Conf    *Config
	Nets    Networks // nil: no NADs (static delegates / clusterNetwork file only)
	Devices DeviceLookup
	Exec    invoke.Exec // nil: exec the plugin binaries
	Sys     *pci.SysFS
	// HostViews, in a long-lived process, keeps the policy's host view between calls (nil: the
	// policy reads the host's links, routes and addresses on every ADD).
	HostViews *HostViews
	// DevInfo is where device-info files are read from ("": devinfo.DefaultBase).
	DevInfo devinfo.Dir
	Log     *slog.Logger
	Timeout time.Duration
	// Depth is how many meta-plugins run above this one (EnvDepth); above 0 nothing is attached.
	Depth int

	// netsErr is why the API client could not be built. Only DEL goes on without it: it works
	// from the cache, and an unreadable kubeconfig (multinet uninstalled with its conf left
	// behind) must not block pod deletion.
	netsErr error
	// logFile is the file Log writes to, closed by Close.
	logFile io.Closer
}

// kubeletDevices asks kubelet (PodResources, then its checkpoint file) which devices a pod got.
func kubeletDevices(c *Config) DeviceLookup {
	cfg := podresources.Config{Socket: c.PodResourcesSocket, Checkpoint: c.KubeletCheckpoint}
	return func(ctx context.Context, namespace, name, uid, resource string) ([]string, error) {
		return podresources.DeviceIDs(ctx, cfg, namespace, name, uid, resource)
	}
}

// Env is what the binary learns from its environment; cmd/ reads it (the CNI plugin takes no
// flags) and passes it here as values, so nothing below reads the process environment.
type Env struct {
	SysfsRoot string      // "": /sys
	DevInfo   devinfo.Dir // "": devinfo.DefaultBase
	Depth     int         // EnvDepth as the binary found it
}

// New builds a Plugin from the netconf and CNI_ARGS for one call of the binary. Close it when
// done (it owns the netconf's log file).
func New(stdin []byte, cniArgs string, env Env) (p *Plugin, err error) {
	var logFile io.Closer
	defer func() {
		if r := recover(); r != nil {
			if logFile != nil {
				logFile.Close()
			}
			p, err = nil, fmt.Errorf("multinet config: internal error: %v", r)
		}
	}()
	conf, err := LoadConfig(stdin)
	if err != nil {
		return nil, err
	}
	var log *slog.Logger
	log, logFile = newLogger(conf)
	p = &Plugin{Conf: conf, Sys: pci.New(env.SysfsRoot), DevInfo: env.DevInfo, Log: log, logFile: logFile, Timeout: 2 * time.Minute, Depth: env.Depth}
	switch {
	case conf.Kubeconfig != "":
		nets, err := newAPINetworks(conf.Kubeconfig)
		if err != nil {
			p.netsErr = err
		} else {
			p.Nets = nets
		}
	case conf.NetworkDir != "":
		p.Nets = &dirNetworks{dir: conf.NetworkDir, statusDir: conf.CacheDir + "/status", args: parseCNIArgs(cniArgs)}
	}
	p.Devices = kubeletDevices(conf)
	return p, nil
}

// Shared is what a long-lived process (the node agent) builds once and hands to every request.
type Shared struct {
	// Nets serves NADs and pods for confs in API mode (a conf with networkDir gets its own
	// standalone source); nil: none.
	Nets      Networks
	Exec      invoke.Exec // nil: exec the plugin binaries
	Sys       *pci.SysFS
	HostViews *HostViews // nil: the policy reads the host per ADD
	DevInfo   devinfo.Dir
	Log       *slog.Logger
	Timeout   time.Duration
	// Depth is the request's EnvDepth, as the shim found it.
	Depth int
}

// NewShared builds the Plugin for one request from its netconf and CNI_ARGS over the process's
// shared parts: no API client, log file or sysfs root is made per call. Per-request data
// (CNI_ARGS) lives only in this Plugin.
func NewShared(stdin []byte, cniArgs string, sh Shared) (p *Plugin, err error) {
	defer func() {
		if r := recover(); r != nil {
			p, err = nil, fmt.Errorf("multinet config: internal error: %v", r)
		}
	}()
	conf, err := LoadConfig(stdin)
	if err != nil {
		return nil, err
	}
	p = &Plugin{Conf: conf, Nets: sh.Nets, Exec: sh.Exec, Sys: sh.Sys, HostViews: sh.HostViews, DevInfo: sh.DevInfo, Log: sh.Log, Timeout: sh.Timeout, Depth: sh.Depth}
	if conf.NetworkDir != "" {
		p.Nets = &dirNetworks{dir: conf.NetworkDir, statusDir: conf.CacheDir + "/status", args: parseCNIArgs(cniArgs)}
	}
	p.Devices = kubeletDevices(conf)
	return p, nil
}

// logger is Log, or warnings to stderr for a Plugin built without one.
func (p *Plugin) logger() *slog.Logger {
	if p.Log == nil {
		p.Log = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("plugin", "multinet")
	}
	return p.Log
}

// Close releases the log file.
func (p *Plugin) Close() error {
	if p.logFile == nil {
		return nil
	}
	err := p.logFile.Close()
	p.logFile = nil
	return err
}

// newLogger logs to logFile under logDir, or to stderr (see package pluginlog).
func newLogger(c *Config) (*slog.Logger, io.Closer) {
	return pluginlog.New(pluginlog.Options{Plugin: "multinet", Level: c.LogLevel, LogDir: c.LogDir, LogFile: c.LogFile, JSON: true})
}

// podRef is the pod as the runtime names it in CNI_ARGS.
type podRef struct {
	Namespace, Name, UID string
	args                 [][2]string // CNI_ARGS to pass on to delegates
}

func parsePodRef(cniArgs string) podRef {
	m := parseCNIArgs(cniArgs)
	r := podRef{Namespace: m["K8S_POD_NAMESPACE"], Name: m["K8S_POD_NAME"], UID: m["K8S_POD_UID"]}
	for _, k := range sortedKeys(m) {
		// Our standalone-mode args are for us; annotation syntax would confuse strict parsers.
		if strings.HasPrefix(k, "MULTINET_") {
			continue
		}
		r.args = append(r.args, [2]string{k, m[k]})
	}
	if _, ok := m["IgnoreUnknown"]; !ok {
		r.args = append([][2]string{{"IgnoreUnknown", "1"}}, r.args...)
	}
	return r
}

func (p *Plugin) cni(path string) *libcni.CNIConfig {
	return delcache.CNI(p.Conf.binPath(path), p.Conf.CacheDir, p.exec())
}

// ctx bounds one verb by Timeout under the caller's context (a daemon cancels it when the
// shim hangs up or on shutdown).
func (p *Plugin) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	if p.Timeout == 0 {
		return context.WithCancel(parent)
	}
	return context.WithTimeout(parent, p.Timeout)
}

// undoCtx is for removing what a failed ADD added: it runs to the end even when the caller
// gave up (undoing half of an undo would leak), bounded by its own Timeout.
func (p *Plugin) undoCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return p.ctx(context.WithoutCancel(ctx))
}

func (p *Plugin) pod(ctx context.Context, ref podRef) (*corev1.Pod, error) {
	if p.Nets == nil || ref.Name == "" {
		// No API and no networkDir, or a runtime that is not Kubernetes: cluster network only.
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ref.Namespace, Name: ref.Name}}, nil
	}
	pod, err := p.Nets.Pod(ctx, ref.Namespace, ref.Name)
	if err != nil {
		return nil, err
	}
	if pod == nil {
		return nil, fmt.Errorf("get pod %s/%s: no pod and no error", ref.Namespace, ref.Name)
	}
	if ref.UID != "" && pod.UID != "" && string(pod.UID) != ref.UID {
		if c, ok := p.Nets.(CachedNetworks); ok {
			// A cache may still hold the pod this one replaced (a StatefulSet's pod recreated
			// under its name): ask the API server before refusing.
			if fresh, err := c.LivePod(ctx, ref.Namespace, ref.Name); err == nil && fresh != nil {
				pod = fresh
			}
		}
	}
	if ref.UID != "" && pod.UID != "" && string(pod.UID) != ref.UID {
		if _, mirror := pod.Annotations["kubernetes.io/config.mirror"]; !mirror {
			return nil, fmt.Errorf("pod %s/%s: the runtime's K8S_POD_UID %s is not the API pod's UID %s (the pod was deleted and recreated)",
				ref.Namespace, ref.Name, ref.UID, pod.UID)
		}
	}
	return pod, nil
}

func (p *Plugin) runtimeConf(args *skel.CmdArgs, ref podRef, d Delegate, netns string) *libcni.RuntimeConf {
	return d.RuntimeConf(args.ContainerID, netns, ref.args)
}
