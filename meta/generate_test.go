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
