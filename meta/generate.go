package meta

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/multinet-io/multinet/internal/fsutil"
	"github.com/multinet-io/multinet/meta/delcache"
)

// Modes of the node's conf: thin runs the meta-plugin binary for every call; thick runs the
// small multinet-shim, which hands the call to the node agent multinetd.
const (
	ModeThin  = "thin"
	ModeThick = "thick"
)

// OwnConfName is the file `multinet config generate` writes.
const OwnConfName = "00-multinet.conflist"

// isBackup spots editor and package-manager leftovers that must never become the cluster network.
func isBackup(name string) bool {
	if strings.HasPrefix(name, ".") || strings.HasSuffix(name, "~") {
		return true
	}
	for _, s := range []string{".bak", ".orig", ".old", ".swp", ".save", ".dpkg-old", ".dpkg-dist", ".rpmsave", ".rpmnew"} {
		if strings.Contains(name, s) {
			return true
		}
	}
	return false
}

// isOwn tells multinet's own confs (by name or by plugin type), so a restart never wraps itself.
func isOwn(path string) bool {
	if filepath.Base(path) == OwnConfName {
		return true
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	var probe struct {
		Type    string `json:"type"`
		Plugins []struct {
			Type string `json:"type"`
		} `json:"plugins"`
	}
	if json.Unmarshal(b, &probe) != nil {
		return false
	}
	// Any multinet* or multus* type: thin or thick (multinet-shim, multus-shim), ours or Multus's.
	if delcache.OwnType(probe.Type) {
		return true
	}
	for _, p := range probe.Plugins {
		if delcache.OwnType(p.Type) {
			return true
		}
	}
	return false
}

// FirstForeignConf returns the alphabetically first CNI conf in dir that is neither ours nor a
// backup file: the cluster network the runtime would have used without us.
func FirstForeignConf(dir string) (string, error) {
	files, err := libcni.ConfFiles(dir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return "", fmt.Errorf("conf dir %s: %w", dir, err)
	}
	sort.Strings(files)
	for _, f := range files {
		if isBackup(filepath.Base(f)) || isOwn(f) {
			continue
		}
		return f, nil
	}
	return "", fmt.Errorf("conf dir %s: no CNI conf other than multinet's", dir)
}

// GenerateOptions are the settings `multinet config generate` puts in the conflist.
type GenerateOptions struct {
	// Mode is ModeThin ("" too) or ModeThick.
	Mode string
	// Socket (thick mode) is the agent's socket when not the default; AgentWait how long the
	// shim's ADD waits for the agent (a Go duration; "": the shim's 45 s).
	Socket                 string
	AgentWait              string
	ConfDir                string
	Kubeconfig             string
	CacheDir               string
	BinDir                 string
	LogDir                 string
	LogFile                string
	LogLevel               string
	NamespaceIsolation     bool
	GlobalNamespaces       []string
	ReadinessIndicatorFile string
	PodResourcesSocket     string
	// Policy is the meta-plugin's policy as JSON (policy.go), checked before it is written.
	Policy                json.RawMessage
	AuxiliaryCNIChainName string
}

// Generate writes <confDir>/00-multinet.conflist wrapping the first foreign conf, keeping its
// cniVersion and capabilities (so portMappings and bandwidth still reach the cluster network).
// It reports whether the file changed: a re-run with the same inputs rewrites nothing.
func Generate(o GenerateOptions) (string, bool, error) {
	typ := "multinet"
	switch o.Mode {
	case "", ModeThin:
		if o.Socket != "" || o.AgentWait != "" {
			return "", false, fmt.Errorf("socket and agent wait are thick-mode settings (--mode thick)")
		}
	case ModeThick:
		typ = "multinet-shim"
		if o.AgentWait != "" {
			if d, err := time.ParseDuration(o.AgentWait); err != nil || d < 0 {
				return "", false, fmt.Errorf("agent wait %q: want a duration like 45s", o.AgentWait)
			}
		}
		if o.Socket != "" && !filepath.IsAbs(o.Socket) {
			return "", false, fmt.Errorf("socket %q: want an absolute path", o.Socket)
		}
	default:
		return "", false, fmt.Errorf("mode %q: want %s or %s", o.Mode, ModeThin, ModeThick)
	}
	wrapped, err := FirstForeignConf(o.ConfDir)
	if err != nil {
		return "", false, err
	}
	b, err := os.ReadFile(wrapped)
	if err != nil {
		return "", false, err
	}
	list, _, err := asConfList(b)
	if err != nil {
		return "", false, fmt.Errorf("%s: %w", wrapped, err)
	}
	l, err := libcni.ConfListFromBytes(list)
	if err != nil {
		return "", false, fmt.Errorf("%s: %w", wrapped, err)
	}
	caps := map[string]bool{}
	for _, p := range l.Plugins {
		for k, v := range p.Network.Capabilities {
			if v {
				caps[k] = true
			}
		}
	}
	plugin := map[string]interface{}{
		"type":           typ,
		"clusterNetwork": wrapped,
	}
	if len(caps) > 0 {
		plugin["capabilities"] = caps
	}
	set := func(k, v string) {
		if v != "" {
			plugin[k] = v
		}
	}
	// The plugin resolves NADs with an empty spec.config in its confDir: it must be the dir
	// this conf is in, or it would find a different conf set (or none) than the runtime.
	if abs, err := filepath.Abs(o.ConfDir); err == nil && abs != DefaultConfDir {
		set("confDir", abs)
	}
	set("socket", o.Socket)
	set("agentWait", o.AgentWait)
	set("kubeconfig", o.Kubeconfig)
	set("cacheDir", o.CacheDir)
	set("binDir", o.BinDir)
	set("logDir", o.LogDir)
	set("logFile", o.LogFile)
	set("logLevel", o.LogLevel)
	set("readinessIndicatorFile", o.ReadinessIndicatorFile)
	set("podResourcesSocket", o.PodResourcesSocket)
	set("auxiliaryCNIChainName", o.AuxiliaryCNIChainName)
	if o.NamespaceIsolation {
		plugin["namespaceIsolation"] = true
	}
	if len(o.Policy) > 0 {
		var pol Policy
		if err := json.Unmarshal(o.Policy, &pol); err != nil {
			return "", false, err
		}
		if err := pol.validate(); err != nil {
			return "", false, err
		}
		plugin["policy"] = o.Policy
	}
	if len(o.GlobalNamespaces) > 0 {
		plugin["globalNamespaces"] = o.GlobalNamespaces
	}
	ver := l.CNIVersion
	if ver == "" {
		ver = "1.0.0"
	}
	out, err := json.MarshalIndent(map[string]interface{}{
		"cniVersion": ver,
		"name":       "multinet-cni-network",
		"plugins":    []interface{}{plugin},
	}, "", "  ")
	if err != nil {
		return "", false, err
	}
	out = append(out, '\n')
	dst := filepath.Join(o.ConfDir, OwnConfName)
	if old, err := os.ReadFile(dst); err == nil && bytes.Equal(old, out) {
		return dst, false, nil
	}
	// 0644: the runtime and node tools read the conf dir.
	if err := fsutil.WriteFileAtomic(dst, out, 0o644); err != nil {
		return "", false, err
	}
	return dst, true, nil
}
