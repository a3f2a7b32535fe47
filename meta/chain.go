package meta

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/libcni"
)

// DefaultReadinessWait is how long ADD waits for readinessIndicatorFile, as Multus does: a
// node that boots starts pods before the cluster network has written its conf, and failing
// them at once only makes kubelet retry with back-off.
const DefaultReadinessWait = 45 * time.Second

// waitReady waits (bounded by readinessIndicatorWait and ctx) for the readiness indicator.
func (c *Config) waitReady(ctx context.Context) error {
	if c.ReadinessIndicatorFile == "" {
		return nil
	}
	wait := DefaultReadinessWait
	if c.ReadinessIndicatorWait > 0 {
		wait = time.Duration(c.ReadinessIndicatorWait * float64(time.Second))
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		err := c.ready()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (waited %s)", err, wait)
		case <-tick.C:
		}
	}
}

// loadConfFile reads a cluster network conf from disk. A conflist also gets the plugins that
// libcni loads from the subdirectory named after the network (<dir>/<name>/*.conf), unless it
// says loadOnlyInlinedPlugins: vendors drop chained plugins there without editing the conf.
func loadConfFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, fmt.Errorf("%s: not JSON: %w", path, err)
	}
	_, isList := probe["plugins"]
	_, hasType := probe["type"]
	if !isList && hasType {
		return b, nil // a single-plugin conf: libcni loads no subdirectory for it
	}
	l, err := libcni.NetworkConfFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return withPlugins(probe, l.Plugins)
}

// withPlugins returns the conflist object top with plugins as its plugin list.
func withPlugins(top map[string]json.RawMessage, plugins []*libcni.PluginConfig) ([]byte, error) {
	raw := make([]json.RawMessage, 0, len(plugins))
	for _, p := range plugins {
		raw = append(raw, p.Bytes)
	}
	pl, err := json.Marshal(raw)
	if err != nil {
		return nil, err
	}
	out := make(map[string]json.RawMessage, len(top)+1)
	for k, v := range top {
		out[k] = v
	}
	out["plugins"] = pl
	return json.Marshal(out)
}

// auxiliaryChain is Multus's auxiliaryCNIChainName: plugins from <dir of clusterNetwork>/<name>/
// run as their own chain after the pod's networks, behind a passthru plugin (so they get an
// empty prevResult and never touch the cluster network's result). No plugins there, no chain.
func (p *planner) auxiliaryChain(ifname, cniVersion string) (*Delegate, error) {
	name := p.conf.AuxiliaryCNIChainName
	if name == "" {
		return nil, nil
	}
	if !filepath.IsAbs(p.conf.ClusterNetwork) {
		return nil, fmt.Errorf("auxiliaryCNIChainName %q: clusterNetwork must be a path to a conf file, not %q", name, p.conf.ClusterNetwork)
	}
	dir := filepath.Dir(p.conf.ClusterNetwork)
	if st, err := os.Stat(p.conf.ClusterNetwork); err == nil && st.IsDir() {
		dir = p.conf.ClusterNetwork
	}
	plugins, err := libcni.NetworkPluginConfsFromFiles(dir, name)
	if err != nil {
		return nil, fmt.Errorf("auxiliaryCNIChainName %q: %w", name, err)
	}
	if len(plugins) == 0 {
		return nil, nil
	}
	pass, err := libcni.NetworkPluginConfFromBytes([]byte(`{"type":"passthru","name":"passthru-cni"}`))
	if err != nil {
		return nil, err
	}
	v, _ := json.Marshal(cniVersion)
	n, _ := json.Marshal(name)
	conf, err := withPlugins(map[string]json.RawMessage{"cniVersion": v, "name": n}, append([]*libcni.PluginConfig{pass}, plugins...))
	if err != nil {
		return nil, err
	}
	return &Delegate{Name: name, IfName: ifname, Auxiliary: true, Conf: conf}, nil
}
