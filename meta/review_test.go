package meta_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// A kubeconfig that is gone by the time of DEL (multinet uninstalled with its config left
// behind, a wiped service-account secret) must not block pod deletion: DEL works from its
// cache and needs no API server, so it must not need the API client's config either.
func TestDelWithoutKubeconfig(t *testing.T) {
	n := newNode(t)
	n.nad("default", "macvlan-conf", n.macvlanConf("macvlan-conf", "192.168.1.0/24"), nil)
	p := n.pod("p1", "macvlan-conf")
	if _, err := p.add(); err != nil {
		t.Fatal(err)
	}
	gone := filepath.Join(n.dir, "removed", "multinet.kubeconfig")
	list, err := libcni.ConfListFromBytes(n.multinetConf(map[string]interface{}{"kubeconfig": gone}))
	if err != nil {
		t.Fatal(err)
	}
	p.list = list
	if err := p.del(); err != nil {
		t.Fatalf("DEL with the kubeconfig gone: %v", err)
	}
	if l := n.leases(); len(l) != 0 {
		t.Errorf("leases after DEL = %v", l)
	}
	if c := n.cacheFiles(); len(c) != 0 {
		t.Errorf("delegate cache after DEL = %v", c)
	}
	// ADD still says why it cannot work.
	q := n.pod("p2", "")
	q.list = list
	if _, err := q.add(); err == nil || !strings.Contains(err.Error(), gone) {
		t.Errorf("ADD with the kubeconfig gone: err = %v, want it to name %s", err, gone)
	}
}
