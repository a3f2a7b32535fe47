package meta_test

import (
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

func keys(m map[string][]string) []string {
	var k []string
	for name := range m {
		k = append(k, name)
	}
	sort.Strings(k)
	return k
}

// The seed's macvlan-conf attached twice: eth0 from the cluster network, net1 and net2 from the
// same NAD, network-status as Multus writes it, and DEL gives every IP back.
func TestSameNADTwiceGivesNet1AndNet2(t *testing.T) {
	n := newNode(t)
	n.nad("default", "macvlan-conf", n.macvlanConf("macvlan-conf", "192.168.1.0/24"), nil)
	p := n.pod("samplepod", "macvlan-conf,macvlan-conf")

	res, err := p.add()
	if err != nil {
		t.Fatal(err)
	}
	links := p.links()
	if got := keys(links); !reflect.DeepEqual(got, []string{"eth0", "net1", "net2"}) {
		t.Fatalf("pod interfaces = %v, want eth0 net1 net2", got)
	}
	if len(res.IPs) != 1 || !strings.HasPrefix(res.IPs[0].Address.IP.String(), "10.244.0.") {
		t.Errorf("result to the runtime should be the cluster network's (10.244.0.x), got %v", res.IPs)
	}
	st := p.status()
	if len(st) != 3 {
		t.Fatalf("network-status has %d entries, want 3: %+v", len(st), st)
	}
	if st[0].Name != "cbr0" || !st[0].Default || st[0].Interface != "eth0" || st[0].IPs[0] != links["eth0"][0] ||
		!reflect.DeepEqual(st[0].Gateway, []string{"10.244.0.1"}) {
		t.Errorf("cluster entry = %+v, pod eth0 has %v", st[0], links["eth0"])
	}
	for i, ifname := range []string{"net1", "net2"} {
		e := st[i+1]
		if e.Name != "default/macvlan-conf" || e.Interface != ifname || e.Default || len(e.IPs) != 1 || e.IPs[0] != links[ifname][0] || e.Mac == "" {
			t.Errorf("entry %d = %+v, pod %s has %v", i+1, e, ifname, links[ifname])
		}
	}
	if r := p.defaultRoutes(); len(r) != 1 || !strings.HasPrefix(r[0], "eth0 ") {
		t.Errorf("default routes in pod = %v, want one, on eth0", r)
	}
	if l := n.leases(); len(l) != 3 {
		t.Errorf("host-local leases after ADD = %v, want 3", l)
	}
	if err := p.check(); err != nil {
		t.Errorf("CHECK after ADD: %v", err)
	}

	if err := p.del(); err != nil {
		t.Fatal(err)
	}
	if got := keys(p.links()); len(got) != 0 {
		t.Errorf("pod interfaces after DEL = %v", got)
	}
	if l := n.leases(); len(l) != 0 {
		t.Errorf("host-local leases after DEL = %v", l)
	}
	if c := n.cacheFiles(); len(c) != 0 {
		t.Errorf("delegate cache after DEL = %v", c)
	}
	if _, err := os.Stat(filepath.Join(n.cacheDir, "status", "ctr-samplepod.json")); !os.IsNotExist(err) {
		t.Errorf("status file after DEL: %v", err)
	}
	if err := p.del(); err != nil {
		t.Errorf("second DEL: %v", err)
	}
}

// A missing NAD fails the pod with its name before anything is attached; a delegate failing
// part-way removes what was attached before it.
func TestFailedAddLeavesNothing(t *testing.T) {
	n := newNode(t)
	n.nad("default", "macvlan-conf", n.macvlanConf("macvlan-conf", "192.168.1.0/24"), nil)
	n.nad("default", "broken", `{"cniVersion": "1.0.0", "name": "broken", "type": "macvlan", "master": "nosuchdev",
	  "ipam": {"type": "host-local", "dataDir": "`+n.ipamDir+`", "subnet": "192.168.9.0/24"}}`, nil)

	p := n.pod("p1", "macvlan-conf,missing-net")
	_, err := p.add()
	if err == nil || !strings.Contains(err.Error(), "default/missing-net") || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("ADD with a missing NAD: err = %v; want it to name default/missing-net", err)
	}

	p2 := n.pod("p2", "macvlan-conf,broken")
	_, err = p2.add()
	if err == nil || !strings.Contains(err.Error(), "network default/broken on net2") {
		t.Fatalf("ADD with a failing delegate: err = %v", err)
	}
	if got := keys(p2.links()); len(got) != 0 {
		t.Errorf("pod interfaces after failed ADD = %v, want none", got)
	}
	if l := n.leases(); len(l) != 0 {
		t.Errorf("leases after failed ADD = %v", l)
	}
	if c := n.cacheFiles(); len(c) != 0 {
		t.Errorf("delegate cache after failed ADD = %v", c)
	}
	for _, bad := range []string{"Macvlan_Conf", "a/b/c", "net@this-name-is-too-long0"} {
		p3 := n.pod("p3", bad)
		if _, err := p3.add(); err == nil || !strings.Contains(err.Error(), "k8s.v1.cni.cncf.io/networks") {
			t.Errorf("bad annotation %q: err = %v", bad, err)
		}
	}
}

// The JSON selection: interface names, static IPs and MAC as capability args, default-route
// moving the pod's default route, and a conflist NAD with a chained plugin.
func TestJSONSelection(t *testing.T) {
	n := newNode(t)
	n.nad("default", "macvlan-conf", strings.Replace(n.macvlanConf("macvlan-conf", "192.168.1.0/24"), `"type": "macvlan"`, `"type": "macvlan", "capabilities": {"mac": true}`, 1), nil)
	n.nad("default", "static-net", `{"cniVersion": "1.0.0", "name": "static-net", "plugins": [
	   {"type": "macvlan", "master": "eth0", "mode": "bridge", "ipam": {"type": "static"}, "capabilities": {"ips": true}},
	   {"type": "tuning", "mtu": 1400}]}`, nil)
	sel := `[{"name": "macvlan-conf", "interface": "data0", "mac": "02:11:22:33:44:55", "default-route": ["192.168.1.1"]},
	         {"name": "static-net", "ips": ["192.168.7.10/24"]}]`
	p := n.pod("p1", sel)
	if _, err := p.add(); err != nil {
		t.Fatal(err)
	}
	links := p.links()
	if got := keys(links); !reflect.DeepEqual(got, []string{"data0", "eth0", "net2"}) {
		t.Fatalf("pod interfaces = %v, want data0 eth0 net2 (a named attachment still uses up position 1)", got)
	}
	if !reflect.DeepEqual(links["net2"], []string{"192.168.7.10"}) {
		t.Errorf("net2 addresses = %v, want the requested 192.168.7.10", links["net2"])
	}
	p.ns.Do(func(ns.NetNS) error {
		l, _ := netlink.LinkByName("data0")
		if l.Attrs().HardwareAddr.String() != "02:11:22:33:44:55" {
			t.Errorf("data0 mac = %s", l.Attrs().HardwareAddr)
		}
		l, _ = netlink.LinkByName("net2")
		if l.Attrs().MTU != 1400 {
			t.Errorf("net2 mtu = %d: the chained tuning plugin did not run", l.Attrs().MTU)
		}
		return nil
	})
	if r := p.defaultRoutes(); !reflect.DeepEqual(r, []string{"data0 via 192.168.1.1"}) {
		t.Errorf("default routes = %v, want only data0 via 192.168.1.1", r)
	}
	st := p.status()
	if st[1].Interface != "data0" || st[1].Mac != "02:11:22:33:44:55" || st[2].Name != "default/static-net" {
		t.Errorf("network-status = %+v", st)
	}
	if err := p.del(); err != nil {
		t.Fatal(err)
	}
}

// DEL after the pod's netns is gone, and after a node reboot wiped nothing but the netns: the
// cache still lists every delegate and IPs come back.
func TestDelAfterNetnsGone(t *testing.T) {
	n := newNode(t)
	n.nad("default", "macvlan-conf", n.macvlanConf("macvlan-conf", "192.168.1.0/24"), nil)
	p := n.pod("p1", "macvlan-conf")
	if _, err := p.add(); err != nil {
		t.Fatal(err)
	}
	p.ns.Close()
	testutils_unmount(t, p)
	if err := p.del(); err != nil {
		t.Fatalf("DEL with the netns gone: %v", err)
	}
	if l := n.leases(); len(l) != 0 {
		t.Errorf("leases after DEL = %v", l)
	}
	// DEL for a container never seen (no cache at all) succeeds.
	q := n.pod("never-added", "macvlan-conf")
	if err := q.del(); err != nil {
		t.Errorf("DEL without cache: %v", err)
	}
}

// The old static style of the seed article 003: delegates, the masterplugin one on eth0.
func TestStaticDelegates(t *testing.T) {
	n := newNode(t)
	n.conf = n.multinetConf(map[string]interface{}{"clusterNetwork": nil, "delegates": []interface{}{
		map[string]interface{}{"cniVersion": "0.3.1", "name": "macvlan-static", "type": "macvlan", "master": "eth0",
			"ipam": map[string]interface{}{"type": "host-local", "dataDir": n.ipamDir, "subnet": "192.168.5.0/24"}},
		map[string]interface{}{"cniVersion": "0.3.1", "name": "flannel-standin", "type": "bridge", "bridge": "mncbr1", "isGateway": true, "masterplugin": true,
			"ipam": map[string]interface{}{"type": "host-local", "dataDir": n.ipamDir, "subnet": "10.233.0.0/24"}},
	}})
	p := n.pod("p1", "")
	res, err := p.add()
	if err != nil {
		t.Fatal(err)
	}
	links := p.links()
	if !strings.HasPrefix(links["eth0"][0], "10.233.0.") || !strings.HasPrefix(links["net1"][0], "192.168.5.") {
		t.Errorf("interfaces = %v: want eth0 from the masterplugin, net1 from the other", links)
	}
	if res.IPs[0].Address.IP.String() != links["eth0"][0] {
		t.Errorf("result IP %s is not eth0's", res.IPs[0].Address.IP)
	}
	if err := p.del(); err != nil {
		t.Fatal(err)
	}
	if l := n.leases(); len(l) != 0 {
		t.Errorf("leases after DEL = %v", l)
	}
}
