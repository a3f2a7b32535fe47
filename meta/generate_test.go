package meta

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGenerateWrapsFirstForeignConf(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("05-calico.conflist.bak", `{"cniVersion":"0.3.1","name":"old","plugins":[{"type":"calico"}]}`)
	write(".01-hidden.conf", `{"cniVersion":"0.3.1","name":"hidden","type":"bridge"}`)
	write("01-multus.conf", `{"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus-shim"}`)
	write("10-calico.conflist", `{"cniVersion":"0.4.0","name":"k8s-pod-network","plugins":[{"type":"calico"},
	  {"type":"portmap","capabilities":{"portMappings":true}},{"type":"bandwidth","capabilities":{"bandwidth":true}}]}`)
	write("20-flannel.conf", `{"cniVersion":"0.3.1","name":"cbr0","type":"flannel"}`)

	path, changed, err := Generate(GenerateOptions{ConfDir: dir, Kubeconfig: "/etc/cni/net.d/multinet.d/kubeconfig"})
	if err != nil || !changed || filepath.Base(path) != OwnConfName {
		t.Fatalf("Generate = %s, %v, %v", path, changed, err)
	}
	b, _ := os.ReadFile(path)
	var got struct {
		CNIVersion string `json:"cniVersion"`
		Plugins    []struct {
			Type           string          `json:"type"`
			ClusterNetwork string          `json:"clusterNetwork"`
			Kubeconfig     string          `json:"kubeconfig"`
			Capabilities   map[string]bool `json:"capabilities"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	p := got.Plugins[0]
	if got.CNIVersion != "0.4.0" || p.Type != "multinet" || p.ClusterNetwork != filepath.Join(dir, "10-calico.conflist") ||
		!p.Capabilities["portMappings"] || !p.Capabilities["bandwidth"] || p.Kubeconfig == "" {
		t.Fatalf("generated %s", b)
	}
	if _, err := LoadConfig(mustPlugin(t, b)); err != nil {
		t.Fatalf("generated conf does not load: %v", err)
	}
	// Re-run: same inputs, no rewrite; our own file is never wrapped.
	st1, _ := os.Stat(path)
	if _, changed, err := Generate(GenerateOptions{ConfDir: dir, Kubeconfig: "/etc/cni/net.d/multinet.d/kubeconfig"}); err != nil || changed {
		t.Fatalf("re-run changed=%v err=%v", changed, err)
	}
	st2, _ := os.Stat(path)
	if !st1.ModTime().Equal(st2.ModTime()) {
		t.Error("re-run rewrote the file")
	}
	os.Remove(filepath.Join(dir, "10-calico.conflist"))
	os.Remove(filepath.Join(dir, "20-flannel.conf"))
	if _, _, err := Generate(GenerateOptions{ConfDir: dir}); err == nil || !strings.Contains(err.Error(), "no CNI conf other than multinet's") {
		t.Fatalf("with only our own and backups left: err = %v", err)
	}
}

func mustPlugin(t *testing.T, conflist []byte) []byte {
	var l struct {
		Plugins []json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal(conflist, &l); err != nil || len(l.Plugins) != 1 {
		t.Fatalf("conflist %s: %v", conflist, err)
	}
	return l.Plugins[0]
}

// --policy puts the operator's policy into the conflist, checked first: a typo in a lock-down
// setting fails generate instead of installing no lock-down.
func TestGenerateEmbedsPolicy(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "10-bridge.conf"), []byte(`{"cniVersion":"1.0.0","name":"cbr0","type":"bridge"}`), 0o644)
	if _, _, err := Generate(GenerateOptions{ConfDir: dir, Policy: []byte(`{"tenantType":["sriov"]}`)}); err == nil ||
		!strings.Contains(err.Error(), `unknown field "tenantType"`) {
		t.Fatalf("misspelt policy: err = %v", err)
	}
	path, _, err := Generate(GenerateOptions{ConfDir: dir, Policy: []byte(`{"tenantTypes": ["sriov"], "protectedLinks": ["eno1"]}`)})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	c, err := LoadConfig(mustPlugin(t, b))
	if err != nil || len(c.Policy.TenantTypes) != 1 || c.Policy.ProtectedLinks[0] != "eno1" {
		t.Fatalf("generated %s: %v", b, err)
	}
}

// --mode thick writes the same conf with the shim as its type: the cluster network and its
// capabilities as in thin mode, the agent's socket when not the default. Neither mode wraps
// the other's conf (a node switched from thin to thick, or with a leftover thick conf).
func TestGenerateThickMode(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "10-calico.conflist"), []byte(`{"cniVersion":"1.0.0","name":"k8s-pod-network","plugins":[{"type":"calico"},
	  {"type":"portmap","capabilities":{"portMappings":true}}]}`), 0o644)
	// A thick conf under another name sorts first and must never become the cluster network.
	os.WriteFile(filepath.Join(dir, "05-old-thick.conflist"), []byte(`{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"multinet-shim","clusterNetwork":"/x"}]}`), 0o644)
	path, _, err := Generate(GenerateOptions{Mode: ModeThick, ConfDir: dir, Socket: "/run/mn/agent.sock", AgentWait: "20s"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	var got struct {
		Plugins []struct {
			Type           string          `json:"type"`
			ClusterNetwork string          `json:"clusterNetwork"`
			Socket         string          `json:"socket"`
			AgentWait      string          `json:"agentWait"`
			Capabilities   map[string]bool `json:"capabilities"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	p := got.Plugins[0]
	if p.Type != "multinet-shim" || p.ClusterNetwork != filepath.Join(dir, "10-calico.conflist") || !p.Capabilities["portMappings"] ||
		p.Socket != "/run/mn/agent.sock" || p.AgentWait != "20s" {
		t.Fatalf("generated %s", b)
	}
	// The agent reads the shim's conf as the meta-plugin's.
	if _, err := LoadConfig(mustPlugin(t, b)); err != nil {
		t.Fatalf("thick conf does not load: %v", err)
	}
	// Back to thin: the thick file is replaced, not wrapped.
	if _, _, err := Generate(GenerateOptions{ConfDir: dir}); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(path)
	if err := json.Unmarshal(b, &got); err != nil || got.Plugins[0].Type != "multinet" || got.Plugins[0].ClusterNetwork != filepath.Join(dir, "10-calico.conflist") {
		t.Fatalf("thin after thick: %s", b)
	}
	for _, bad := range []GenerateOptions{{Mode: "thicc", ConfDir: dir}, {ConfDir: dir, Socket: "/run/x.sock"}, {Mode: ModeThick, ConfDir: dir, AgentWait: "soon"}} {
		if _, _, err := Generate(bad); err == nil {
			t.Errorf("Generate(%+v) passed", bad)
		}
	}
}
