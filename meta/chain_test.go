package meta

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pluginTypes lists the plugin types of a delegate's conflist, in order.
func pluginTypes(t *testing.T, d Delegate) []string {
	t.Helper()
	l, err := d.List()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range l.Plugins {
		out = append(out, p.Network.Type)
	}
	return out
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Multus's e2e "subdirectory chaining": a vendor drops tuning.conf into <confDir>/<network>/ and
// every pod's cluster network runs it, the conflist itself unchanged.
func TestClusterNetworkLoadsSubdirectoryPlugins(t *testing.T) {
	conf, nets := standalone(t, nil)
	dir := filepath.Dir(conf.ClusterNetwork)
	writeFile(t, filepath.Join(dir, "cbr0", "50-tuning.conf"), `{"cniVersion":"1.0.0","name":"arp","type":"tuning","sysctl":{"net.ipv4.conf.eth0.arp_filter":"1"}}`)
	p := &planner{conf: conf, nets: nets}
	ds, err := p.plan(context.Background(), podWith(""), "uid-1", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(pluginTypes(t, ds[0]), ","); got != "bridge,tuning" {
		t.Errorf("cluster network plugins = %s, want bridge,tuning", got)
	}

	// A conflist that says loadOnlyInlinedPlugins keeps to its own list.
	writeFile(t, conf.ClusterNetwork, `{"cniVersion":"1.0.0","name":"cbr0","loadOnlyInlinedPlugins":true,"plugins":[{"type":"bridge"}]}`)
	ds, err = p.plan(context.Background(), podWith(""), "uid-1", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(pluginTypes(t, ds[0]), ","); got != "bridge" {
		t.Errorf("with loadOnlyInlinedPlugins, plugins = %s, want bridge", got)
	}

	// A conflist with no plugins of its own gets them all from the subdirectory.
	writeFile(t, conf.ClusterNetwork, `{"cniVersion":"1.0.0","name":"cbr0"}`)
	ds, err = p.plan(context.Background(), podWith(""), "uid-1", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(pluginTypes(t, ds[0]), ","); got != "tuning" {
		t.Errorf("plugins-less conflist = %s, want tuning", got)
	}
}

func TestAuxiliaryChainRunsLastBehindPassthru(t *testing.T) {
	conf, nets := standalone(t, map[string]string{"sriov": sriovNAD})
	conf.AuxiliaryCNIChainName = "vendor-cni-chain"
	p := &planner{conf: conf, nets: nets}

	// No plugins in the subdirectory (or no subdirectory): no chain, as Multus.
	ds, err := p.plan(context.Background(), podWith("plain-sriov"), "uid-1", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 {
		t.Fatalf("delegates = %d, want cluster + plain-sriov only", len(ds))
	}

	writeFile(t, filepath.Join(filepath.Dir(conf.ClusterNetwork), "vendor-cni-chain", "sysctltwiddle.conf"),
		`{"cniVersion":"1.0.0","name":"sysctltwiddle","type":"tuning","sysctl":{"net.ipv4.conf.eth0.arp_filter":"1"}}`)
	ds, err = p.plan(context.Background(), podWith("plain-sriov"), "uid-1", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 3 {
		t.Fatalf("delegates = %d, want cluster, plain-sriov, the auxiliary chain", len(ds))
	}
	aux := ds[2]
	if !aux.Auxiliary || aux.Name != "vendor-cni-chain" || aux.IfName != "eth0" {
		t.Errorf("auxiliary delegate = %+v", aux)
	}
	if got := strings.Join(pluginTypes(t, aux), ","); got != "passthru,tuning" {
		t.Errorf("auxiliary chain = %s, want passthru,tuning", got)
	}
	if ds[1].IfName != "net1" {
		t.Errorf("the pod's network is on %s: the auxiliary chain must not take a netN", ds[1].IfName)
	}
	// The chain is no network of the pod's: no network-status entry.
	var pl Plugin
	sts, err := pl.statuses("c1", ds[2:], nil, nil)
	if err != nil || len(sts) != 0 {
		t.Errorf("network-status of the auxiliary chain = %v, %v; want none", sts, err)
	}

	conf.ConfDir, conf.ClusterNetwork = filepath.Dir(conf.ClusterNetwork), "cbr0"
	if _, err := p.plan(context.Background(), podWith(""), "uid-1", "eth0"); err == nil || !strings.Contains(err.Error(), "clusterNetwork must be a path") {
		t.Errorf("auxiliary chain with a clusterNetwork name: err = %v", err)
	}
}

func TestReadinessIndicatorFileIsWaitedFor(t *testing.T) {
	ready := filepath.Join(t.TempDir(), "ready")
	c := &Config{ReadinessIndicatorFile: ready, ReadinessIndicatorWait: 5}
	go func() {
		time.Sleep(400 * time.Millisecond)
		os.WriteFile(ready, nil, 0o644)
	}()
	start := time.Now()
	if err := c.waitReady(context.Background()); err != nil {
		t.Fatalf("the file appeared after 0.4 s: %v", err)
	}
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Errorf("returned after %s, before the file existed", waited)
	}

	c.ReadinessIndicatorFile += ".never"
	c.ReadinessIndicatorWait = 0.3
	err := c.waitReady(context.Background())
	if err == nil || !strings.Contains(err.Error(), c.ReadinessIndicatorFile) || !strings.Contains(err.Error(), "waited 300ms") {
		t.Errorf("never-ready: err = %v, want it to name the file and the wait", err)
	}
	// Multus's lowercase key is accepted (Go's JSON field matching is case-insensitive).
	var lc Config
	if err := json.Unmarshal([]byte(`{"readinessindicatorfile":"/x"}`), &lc); err != nil || lc.ReadinessIndicatorFile != "/x" {
		t.Errorf("readinessindicatorfile = %q, %v", lc.ReadinessIndicatorFile, err)
	}
}
