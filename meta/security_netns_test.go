package meta_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// The reproduction, through the built binary as a runtime runs it: a tenant NAD that is
// a nested multinet with binDir /bin and a delegate of type sh. Before, /bin/sh ran as root and
// its output came back in the CNI error. Now ADD is refused naming the NAD and the type, sh
// never runs, and the pod is left with nothing.
func TestSecurityNestedMultinetNADDoesNotRunSh(t *testing.T) {
	n := newNode(t)
	marker := filepath.Join(n.dir, "pwned")
	for _, typ := range []string{"multinet", "multus"} {
		n.nad("default", "evil-"+typ, fmt.Sprintf(`{"cniVersion":"1.0.0","name":"evil","type":%q,"binDir":"/bin",
		  "cacheDir":%q,
		  "delegates":[{"cniVersion":"1.0.0","name":"x","type":"sh","cmd":"$(id|tee -a %s)"}]}`,
			typ, filepath.Join(n.dir, "evil-cache"), marker), nil)
		p := n.pod("p-"+typ, "evil-"+typ)
		_, err := p.add()
		if err == nil || !strings.Contains(err.Error(), "NAD default/evil-"+typ) || !strings.Contains(err.Error(), `plugin type "`+typ+`" refused`) {
			t.Errorf("ADD with a nested %s NAD: err = %v, want refused naming the NAD and the type", typ, err)
		}
		if err != nil && strings.Contains(err.Error(), "uid=") {
			t.Errorf("command output in the CNI error: %v", err)
		}
		if links := keys(p.links()); len(links) != 0 {
			t.Errorf("pod interfaces after refused ADD = %v", links)
		}
		if err := p.del(); err != nil {
			t.Errorf("DEL after refused ADD: %v", err)
		}
	}
	if b, err := os.ReadFile(marker); err == nil {
		t.Fatalf("the tenant's command ran: %s", b)
	}
	if l := n.leases(); len(l) != 0 {
		t.Errorf("leases = %v", l)
	}
	if c := n.cacheFiles(); len(c) != 0 {
		t.Errorf("delegate cache = %v", c)
	}
}

// Wall 2 through the binary: multinet installed under another name ("wrapper", which no type
// check knows) and named by a NAD with the same nested payload. The nested instance sees
// MULTINET_DEPTH and refuses; sh never runs and the pod keeps nothing.
func TestSecurityDepthGuardStopsRenamedMultinet(t *testing.T) {
	n := newNode(t)
	wrapDir := filepath.Join(n.dir, "wrapbin")
	os.MkdirAll(wrapDir, 0o755)
	if err := os.Symlink(multinetBin, filepath.Join(wrapDir, "wrapper")); err != nil {
		t.Fatal(err)
	}
	n.conf = n.multinetConf(map[string]interface{}{"networkDir": n.netDir, "binDir": wrapDir})
	marker := filepath.Join(n.dir, "pwned")
	n.nad("default", "wrapped", fmt.Sprintf(`{"cniVersion":"1.0.0","name":"wrapped","type":"wrapper","binDir":"/bin",
	  "cacheDir":%q,
	  "delegates":[{"cniVersion":"1.0.0","name":"x","type":"sh","cmd":"$(id|tee -a %s)"}]}`,
		filepath.Join(n.dir, "nested-cache"), marker), nil)
	p := n.pod("p1", "wrapped")
	_, err := p.add()
	if err == nil || !strings.Contains(err.Error(), "network default/wrapped on net1") || !strings.Contains(err.Error(), "started as a delegate of multinet (MULTINET_DEPTH=1)") {
		t.Fatalf("ADD through a renamed multinet: err = %v, want the nested run refused", err)
	}
	if b, err := os.ReadFile(marker); err == nil {
		t.Fatalf("the tenant's command ran: %s", b)
	}
	if _, err := os.Stat(filepath.Join(n.dir, "nested-cache")); !os.IsNotExist(err) {
		t.Errorf("the nested instance wrote its cache: %v", err)
	}
	if links := keys(p.links()); len(links) != 0 {
		t.Errorf("pod interfaces after refused ADD = %v", links)
	}
	if err := p.del(); err != nil {
		t.Errorf("DEL: %v", err)
	}
	if l := n.leases(); len(l) != 0 {
		t.Errorf("leases = %v", l)
	}
}

// The marker reaches what delegates exec in turn: a NAD whose macvlan takes its IPAM from a
// renamed multinet gets the nested instance refused too (MULTINET_DEPTH passes through the
// delegate's environment to its IPAM plugin).
func TestSecurityDepthGuardThroughIPAM(t *testing.T) {
	n := newNode(t)
	wrapDir := filepath.Join(n.dir, "wrapbin")
	os.MkdirAll(wrapDir, 0o755)
	if err := os.Symlink(multinetBin, filepath.Join(wrapDir, "wrapper-ipam")); err != nil {
		t.Fatal(err)
	}
	n.conf = n.multinetConf(map[string]interface{}{"networkDir": n.netDir, "binDir": wrapDir})
	n.nad("default", "via-ipam", `{"cniVersion":"1.0.0","name":"via-ipam","type":"macvlan","master":"eth0","mode":"bridge",
	  "clusterNetwork":"/nonexistent","ipam":{"type":"wrapper-ipam"}}`, nil)
	p := n.pod("p1", "via-ipam")
	_, err := p.add()
	if err == nil || !strings.Contains(err.Error(), "network default/via-ipam on net1") || !strings.Contains(err.Error(), "started as a delegate of multinet") {
		t.Fatalf("ADD with a renamed multinet as IPAM: err = %v, want the nested run refused", err)
	}
	if links := keys(p.links()); len(links) != 0 {
		t.Errorf("pod interfaces after refused ADD = %v", links)
	}
	if err := p.del(); err != nil {
		t.Errorf("DEL: %v", err)
	}
}

// Issue 12.8: a delegate's plugin binary removed from the node (uninstalled, renamed on an
// upgrade) made every DEL of pods that used it fail, forever. DEL now runs the rest of the
// chain (the IP lease is released), records what it could not undo for doctor, and succeeds.
func TestSecurityDelWithDelegateBinaryRemoved(t *testing.T) {
	n := newNode(t)
	bin := filepath.Join(n.dir, "bin")
	os.MkdirAll(bin, 0o755)
	for _, p := range []string{"bridge", "host-local", "portmap", "macvlan", "tuning"} {
		if err := os.Symlink(filepath.Join(refPlugins, p), filepath.Join(bin, p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(multinetBin, filepath.Join(bin, "multinet")); err != nil {
		t.Fatal(err)
	}
	n.nad("default", "tuned", fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "tuned", "plugins": [
	  {"type": "macvlan", "master": "eth0", "mode": "bridge", "ipam": {"type": "host-local", "dataDir": %q, "subnet": "10.63.0.0/24"}},
	  {"type": "tuning", "sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1"}}]}`, n.ipamDir), nil)
	p := n.pod("p1", "tuned")
	p.cni = libcni.NewCNIConfigWithCacheDir([]string{bin}, n.rtCache, nil)
	if _, err := p.add(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(bin, "tuning")); err != nil {
		t.Fatal(err)
	}
	if err := p.del(); err != nil {
		t.Fatalf("DEL with the tuning binary gone: %v", err)
	}
	if l := n.leases(); len(l) != 0 {
		t.Errorf("leases after DEL = %v: the rest of the chain was not deleted", l)
	}
	if c := n.cacheFiles(); len(c) != 0 {
		t.Errorf("delegate cache after DEL = %v", c)
	}
	recs, _ := filepath.Glob(filepath.Join(n.cacheDir, "problems", "*.json"))
	if len(recs) != 1 {
		t.Fatalf("problem records = %v, want one for the missing tuning binary", recs)
	}
	b, _ := os.ReadFile(recs[0])
	for _, want := range []string{`"network": "default/tuned"`, `"ifName": "net1"`, "tuning", "ctr-p1"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("problem record %s lacks %q", b, want)
		}
	}
}
