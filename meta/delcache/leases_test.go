package delcache

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// host-local creates a lease file and then writes the container ID into it: a plugin killed in
// between (the node agent's process group SIGKILLed mid-ADD) leaves an empty lease that no DEL
// releases, since DEL releases by container ID. The pod's DEL through the delegate cache
// releases its own lease and that empty one, and leaves another container's alone.
func TestDelReleasesLeaseCutBeforeItNamedAContainer(t *testing.T) {
	const plugins = "/usr/lib/cni"
	if _, err := os.Stat(filepath.Join(plugins, "macvlan")); err != nil {
		t.Skipf("reference CNI plugins missing (%v): run hack/deps.sh", err)
	}
	dataDir, cacheDir := t.TempDir(), t.TempDir()
	netDir := filepath.Join(dataDir, "net-a")
	os.MkdirAll(netDir, 0o755)
	for ip, content := range map[string]string{"10.1.0.5": "", "10.1.0.6": "other\r\neth0", "10.1.0.7": "c1\r\nnet1", "last_reserved_ip.0": "10.1.0.7"} {
		if err := os.WriteFile(filepath.Join(netDir, ip), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	conf, _ := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "net-a", "plugins": []any{map[string]any{
		"type": "macvlan", "master": "eth0", "ipam": map[string]any{"type": "host-local", "subnet": "10.1.0.0/24", "dataDir": dataDir}}}})
	e := &Entry{ContainerID: "c1", IfName: "eth0", PodNamespace: "default", PodName: "p",
		Delegates: []Delegate{{Name: "default/net-a", IfName: "net1", Conf: conf}}}
	if err := Save(cacheDir, e); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if _, err := Del(context.Background(), []string{plugins}, DefaultExec(), cacheDir, "c1", "", log); err != nil {
		t.Fatal(err)
	}
	es, _ := os.ReadDir(netDir)
	var left []string
	for _, e := range es {
		left = append(left, e.Name())
	}
	sort.Strings(left)
	if got, want := left, []string{"10.1.0.6", "last_reserved_ip.0", "lock"}; len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("lease dir after DEL: %v, want %v (the cut lease and ours released, the other container's kept)", got, want)
	}
}
