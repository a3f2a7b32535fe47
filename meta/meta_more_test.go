package meta_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
)

// defaultNetworks go to every pod outside the system namespaces, before its own selection;
// the default-network annotation replaces eth0's network; an empty spec.config falls back to
// the conf file of that name in confDir.
func TestDefaultNetworksAndOverrides(t *testing.T) {
	n := newNode(t)
	n.write(n.confDir, "50-mgmt.conf", `{"cniVersion": "0.4.0", "name": "mgmt-net", "type": "macvlan", "master": "eth0",
	  "ipam": {"type": "host-local", "dataDir": "`+n.ipamDir+`", "subnet": "192.168.50.0/24"}}`)
	n.nad("kube-system", "mgmt-net", "", nil) // empty spec.config: the conf file named mgmt-net
	n.nad("default", "macvlan-conf", n.macvlanConf("macvlan-conf", "192.168.1.0/24"), nil)
	n.nad("default", "alt-cluster", `{"cniVersion": "1.0.0", "name": "alt-cluster", "type": "bridge", "bridge": "mnalt0", "isGateway": true,
	  "ipam": {"type": "host-local", "dataDir": "`+n.ipamDir+`", "subnet": "10.99.0.0/24"}}`, nil)
	n.conf = n.multinetConf(map[string]interface{}{"networkDir": n.netDir, "confDir": n.confDir, "defaultNetworks": []string{"mgmt-net"}})

	p := n.pod("p1", "macvlan-conf", [2]string{"MULTINET_DEFAULT_NETWORK", "default/alt-cluster"})
	if _, err := p.add(); err != nil {
		t.Fatal(err)
	}
	links := p.links()
	if !strings.HasPrefix(links["eth0"][0], "10.99.0.") || !strings.HasPrefix(links["net1"][0], "192.168.50.") || !strings.HasPrefix(links["net2"][0], "192.168.1.") {
		t.Errorf("interfaces = %v: want eth0 from alt-cluster, net1 from the default network mgmt-net, net2 from macvlan-conf", links)
	}
	st := p.status()
	if st[0].Name != "alt-cluster" || st[1].Name != "kube-system/mgmt-net" || st[2].Name != "default/macvlan-conf" {
		t.Errorf("network-status names = %s %s %s", st[0].Name, st[1].Name, st[2].Name)
	}
	if err := p.del(); err != nil {
		t.Fatal(err)
	}
	if l := n.leases(); len(l) != 0 {
		t.Errorf("leases after DEL = %v", l)
	}
}

// The runtime's portMappings reach the cluster network's portmap plugin through multinet.
func TestCapabilitiesReachClusterNetwork(t *testing.T) {
	n := newNode(t)
	p := n.pod("web", "")
	p.rt.CapabilityArgs = map[string]interface{}{"portMappings": []map[string]interface{}{{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}}}
	if _, err := p.add(); err != nil {
		t.Fatal(err)
	}
	var rules string
	n.host.Do(func(ns.NetNS) error {
		out, _ := exec.Command("iptables-save", "-t", "nat").CombinedOutput()
		rules = string(out)
		return nil
	})
	if !strings.Contains(rules, "--dport 18080") {
		t.Errorf("no DNAT for hostPort 18080 in the node's nat table:\n%s", rules)
	}
	if err := p.del(); err != nil {
		t.Fatal(err)
	}
}

// STATUS says not ready until the readiness indicator exists; GC deletes the attachments of
// containers the runtime no longer lists (a missed DEL), giving their IPs back.
func TestStatusAndGC(t *testing.T) {
	n := newNode(t)
	ready := filepath.Join(n.dir, "cluster-ready")
	n.conf = n.multinetConf(map[string]interface{}{"networkDir": n.netDir, "readinessIndicatorFile": ready})
	n.nad("default", "macvlan-conf", n.macvlanConf("macvlan-conf", "192.168.1.0/24"), nil)
	p := n.pod("p1", "macvlan-conf")
	err := n.host.Do(func(ns.NetNS) error { return p.cni.GetStatusNetworkList(context.Background(), p.list) })
	if err == nil || !strings.Contains(err.Error(), "not ready") {
		t.Fatalf("STATUS without the readiness file: %v", err)
	}
	if _, err := p.add(); err == nil || !strings.Contains(err.Error(), "readinessIndicatorFile") {
		t.Fatalf("ADD before ready: %v", err)
	}
	os.WriteFile(ready, nil, 0o644)
	if err := n.host.Do(func(ns.NetNS) error { return p.cni.GetStatusNetworkList(context.Background(), p.list) }); err != nil {
		t.Fatalf("STATUS when ready: %v", err)
	}
	if _, err := p.add(); err != nil {
		t.Fatal(err)
	}
	keep := n.pod("p2", "")
	if _, err := keep.add(); err != nil {
		t.Fatal(err)
	}
	if l := n.leases(); len(l) != 3 {
		t.Fatalf("leases = %v", l)
	}
	err = n.host.Do(func(ns.NetNS) error {
		return p.cni.GCNetworkList(context.Background(), p.list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: "ctr-p2", IfName: "eth0"}}})
	})
	if err != nil {
		t.Fatal(err)
	}
	if l := n.leases(); len(l) != 1 {
		t.Errorf("leases after GC = %v, want only p2's", l)
	}
	if c := n.cacheFiles(); len(c) != 1 || filepath.Base(c[0]) != "ctr-p2.json" {
		t.Errorf("cache after GC = %v", c)
	}
	if got := keys(p.links()); len(got) != 0 {
		t.Errorf("collected pod still has %v", got)
	}
}
