package meta_test

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
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

// At most one default route per family means one, not none: an IPv6 attachment on a pod whose
// cluster network is IPv4-only keeps its IPv6 default route (Multus leaves it too).
func TestOnlyV6DefaultRouteStays(t *testing.T) {
	n := newNode(t)
	n.nad("default", "v6-net", `{"cniVersion": "1.0.0", "name": "v6-net", "type": "macvlan", "master": "eth0", "mode": "bridge",
	  "ipam": {"type": "host-local", "dataDir": "`+n.ipamDir+`", "ranges": [[{"subnet": "fd00:6::/64", "gateway": "fd00:6::1"}]],
	           "routes": [{"dst": "::/0"}]}}`, nil)
	p := n.pod("p1", "v6-net")
	// No DAD in the pod: the macvlan's parent has no carrier here, its address would stay tentative.
	p.ns.Do(func(ns.NetNS) error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/default/accept_dad", []byte("0"), 0o644)
	})
	if _, err := p.add(); err != nil {
		t.Fatal(err)
	}
	if r := p.defaultRoutes6(); len(r) != 1 || !strings.HasPrefix(r[0], "net1 via fd00:6::1") {
		t.Errorf("IPv6 default routes in the pod = %v, want net1's (the only one)", r)
	}
	if r := p.defaultRoutes(); len(r) != 1 || !strings.HasPrefix(r[0], "eth0 ") {
		t.Errorf("IPv4 default routes in the pod = %v, want eth0's", r)
	}
	if err := p.del(); err != nil {
		t.Fatal(err)
	}
}

// default-route names the gateway the pod must use: an attachment whose IPAM already routes
// 0.0.0.0/0 through another gateway gets the requested one, not its own.
func TestDefaultRouteGatewayIsTheRequestedOne(t *testing.T) {
	n := newNode(t)
	n.nad("default", "macvlan-conf", n.macvlanConf("macvlan-conf", "192.168.1.0/24"), nil)
	p := n.pod("p1", `[{"name": "macvlan-conf", "default-route": ["192.168.1.254"]}]`)
	if _, err := p.add(); err != nil {
		t.Fatal(err)
	}
	if r := p.defaultRoutes(); !reflect.DeepEqual(r, []string{"net1 via 192.168.1.254"}) {
		t.Errorf("default routes = %v, want only net1 via 192.168.1.254", r)
	}
	if err := p.del(); err != nil {
		t.Fatal(err)
	}
}

// Two attachments asking for the IPv4 default route is a contradiction the pod's author must
// resolve: ADD fails naming both (as Multus does) instead of silently picking one.
func TestTwoDefaultRouteRequestsRefused(t *testing.T) {
	n := newNode(t)
	n.nad("default", "macvlan-conf", n.macvlanConf("macvlan-conf", "192.168.1.0/24"), nil)
	n.nad("default", "other", n.macvlanConf("other", "192.168.2.0/24"), nil)
	p := n.pod("p1", `[{"name": "macvlan-conf", "default-route": ["192.168.1.1"]}, {"name": "other", "default-route": ["192.168.2.1"]}]`)
	_, err := p.add()
	if err == nil || !strings.Contains(err.Error(), "default/macvlan-conf") || !strings.Contains(err.Error(), "default/other") {
		t.Fatalf("ADD with two IPv4 default-route requests: err = %v, want both networks named", err)
	}
	if got := keys(p.links()); len(got) != 0 {
		t.Errorf("pod interfaces after refused ADD = %v", got)
	}
	if l := n.leases(); len(l) != 0 {
		t.Errorf("leases after refused ADD = %v", l)
	}
}

func (p *pod) defaultRoutes6() []string {
	p.n.t.Helper()
	var out []string
	p.ns.Do(func(ns.NetNS) error {
		routes, _ := netlink.RouteList(nil, netlink.FAMILY_V6)
		for _, r := range routes {
			if r.Dst == nil || r.Dst.String() == "::/0" {
				l, _ := netlink.LinkByIndex(r.LinkIndex)
				out = append(out, l.Attrs().Name+" via "+r.Gw.String())
			}
		}
		return nil
	})
	return out
}

// network-status "gateway" tells which interface holds the pod's default route (why the field
// exists): it must follow the routes the pod ends up with, not the delegates' results from
// before the extra default routes were removed.
func TestStatusGatewayFollowsDefaultRoute(t *testing.T) {
	n := newNode(t)
	n.nad("default", "macvlan-conf", n.macvlanConf("macvlan-conf", "192.168.1.0/24"), nil)
	p := n.pod("p1", "macvlan-conf")
	if _, err := p.add(); err != nil {
		t.Fatal(err)
	}
	st := p.status()
	if !reflect.DeepEqual(st[0].Gateway, []string{"10.244.0.1"}) || len(st[1].Gateway) != 0 {
		t.Errorf("gateways in network-status: eth0 %v, net1 %v; want eth0 [10.244.0.1] and none on net1 (pod routes: %v)",
			st[0].Gateway, st[1].Gateway, p.defaultRoutes())
	}
	if err := p.del(); err != nil {
		t.Fatal(err)
	}

	q := n.pod("p2", `[{"name": "macvlan-conf", "default-route": ["192.168.1.1"]}]`)
	if _, err := q.add(); err != nil {
		t.Fatal(err)
	}
	st = q.status()
	if len(st[0].Gateway) != 0 || !reflect.DeepEqual(st[1].Gateway, []string{"192.168.1.1"}) {
		t.Errorf("gateways in network-status: eth0 %v, net1 %v; want none on eth0 and net1 [192.168.1.1] (pod routes: %v)",
			st[0].Gateway, st[1].Gateway, q.defaultRoutes())
	}
	if err := q.del(); err != nil {
		t.Fatal(err)
	}
}

// Pods come and go in parallel on a node (a reboot herd): concurrent ADDs and DELs of different
// pods share the cache dir, libcni's result cache and the IPAM store, and must neither fail nor
// leak.
func TestConcurrentPods(t *testing.T) {
	n := newNode(t)
	n.nad("default", "macvlan-conf", n.macvlanConf("macvlan-conf", "192.168.1.0/24"), nil)
	const pods = 8
	ps := make([]*pod, pods)
	for i := range ps {
		ps[i] = n.pod(fmt.Sprintf("p%d", i), "macvlan-conf,macvlan-conf")
	}
	run := func(f func(*pod) error) []error {
		errs := make([]error, pods)
		var wg sync.WaitGroup
		for i := range ps {
			wg.Add(1)
			go func(i int) { defer wg.Done(); errs[i] = f(ps[i]) }(i)
		}
		wg.Wait()
		return errs
	}
	for i, err := range run(func(p *pod) error { _, err := p.add(); return err }) {
		if err != nil {
			t.Errorf("ADD p%d: %v", i, err)
		}
	}
	if l := n.leases(); len(l) != 3*pods {
		t.Errorf("%d leases after %d concurrent ADDs, want %d", len(l), pods, 3*pods)
	}
	for i, p := range ps {
		if got := keys(p.links()); !reflect.DeepEqual(got, []string{"eth0", "net1", "net2"}) {
			t.Errorf("p%d interfaces = %v", i, got)
		}
		if st := p.status(); len(st) != 3 {
			t.Errorf("p%d network-status has %d entries", i, len(st))
		}
	}
	for i, err := range run(func(p *pod) error { return p.del() }) {
		if err != nil {
			t.Errorf("DEL p%d: %v", i, err)
		}
	}
	if l := n.leases(); len(l) != 0 {
		t.Errorf("leases after concurrent DELs = %v", l)
	}
	if c := n.cacheFiles(); len(c) != 0 {
		t.Errorf("delegate cache after concurrent DELs = %v", c)
	}
	if m, _ := filepath.Glob(filepath.Join(n.rtCache, "results", "*")); len(m) != 0 {
		t.Errorf("runtime's result cache after DEL = %v", m)
	}
	if m, _ := filepath.Glob(filepath.Join(n.cacheDir, "results", "results", "*")); len(m) != 0 {
		t.Errorf("multinet's libcni result cache after DEL = %v", m)
	}
}

// A delegate cache cut short (a full disk, a crash on a filesystem without ordered writes) must
// not block DEL, which falls back to libcni's record, and must not outlive it either: GC would
// otherwise find the container forever.
func TestDelWithCorruptCacheCleansUp(t *testing.T) {
	n := newNode(t)
	n.nad("default", "macvlan-conf", n.macvlanConf("macvlan-conf", "192.168.1.0/24"), nil)
	p := n.pod("p1", "macvlan-conf")
	if _, err := p.add(); err != nil {
		t.Fatal(err)
	}
	c := n.cacheFiles()
	if len(c) != 1 {
		t.Fatalf("delegate cache = %v", c)
	}
	if err := os.WriteFile(c[0], []byte(`{"containerID": "ctr-p1", "deleg`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.del(); err != nil {
		t.Fatalf("DEL with a corrupt cache: %v", err)
	}
	if l := n.leases(); len(l) != 0 {
		t.Errorf("leases after DEL = %v", l)
	}
	if got := keys(p.links()); len(got) != 0 {
		t.Errorf("pod interfaces after DEL = %v", got)
	}
	if c := n.cacheFiles(); len(c) != 0 {
		t.Errorf("delegate cache after DEL = %v", c)
	}
}

// flakyPlugin writes a CNI plugin whose ADD takes a resource (a marker file, as a remote IPAM's
// lease) and whose DEL gives it back, but fails while dir/del-fails exists.
func flakyPlugin(t *testing.T, dir string) {
	t.Helper()
	script := `#!/bin/sh
D=` + dir + `
cat >/dev/null
case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0"]}' ;;
ADD) touch "$D/held-$CNI_CONTAINERID"; echo '{"cniVersion":"1.0.0"}' ;;
DEL) if [ -e "$D/del-fails" ]; then echo '{"cniVersion":"1.0.0","code":11,"msg":"flaky: DEL failed"}'; exit 1; fi
     rm -f "$D/held-$CNI_CONTAINERID" ;;
esac
`
	if err := os.WriteFile(filepath.Join(dir, "flaky"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

// When the undo of a failed ADD cannot remove everything (an attached delegate's DEL fails for
// now), the error says so, and the record keeps what is left so that the runtime's DEL retries
// it: nothing leaks. The delegate whose ADD failed (a broken NAD, whose DEL fails as well) is not
// kept: it would make the pod undeletable.
func TestFailedUndoKeepsTheRecordForDel(t *testing.T) {
	n := newNode(t)
	bin := filepath.Join(n.dir, "bin")
	os.MkdirAll(bin, 0o755)
	flakyPlugin(t, bin)
	n.conf = n.multinetConf(map[string]interface{}{"networkDir": n.netDir, "binDir": bin})
	n.nad("default", "macvlan-conf", n.macvlanConf("macvlan-conf", "192.168.1.0/24"), nil)
	n.nad("default", "flaky-net", `{"cniVersion": "1.0.0", "name": "flaky-net", "type": "flaky"}`, nil)
	n.nad("default", "broken", `{"cniVersion": "1.0.0", "name": "broken", "type": "macvlan", "master": "nosuchdev",
	  "ipam": {"type": "host-local", "dataDir": "`+n.ipamDir+`", "subnet": "192.168.9.0/24"}}`, nil)
	os.WriteFile(filepath.Join(bin, "del-fails"), nil, 0o644)

	p := n.pod("p1", "macvlan-conf,flaky-net,broken")
	_, err := p.add()
	if err == nil || !strings.Contains(err.Error(), "network default/broken on net3") || !strings.Contains(err.Error(), "undo incomplete") ||
		!strings.Contains(err.Error(), "default/flaky-net") {
		t.Fatalf("ADD: err = %v; want the failing network named and the incomplete undo reported", err)
	}
	os.Remove(filepath.Join(bin, "del-fails"))
	if err := p.del(); err != nil {
		t.Fatalf("runtime's DEL after the failed ADD: %v", err)
	}
	if _, err := os.Stat(filepath.Join(bin, "held-ctr-p1")); !os.IsNotExist(err) {
		t.Errorf("the flaky delegate's resource is still held after DEL: the retry never reached it")
	}
	if l := n.leases(); len(l) != 0 {
		t.Errorf("leases after DEL = %v", l)
	}
	if c := n.cacheFiles(); len(c) != 0 {
		t.Errorf("delegate cache after DEL = %v", c)
	}
}

// A NAD whose config is older than CNI 0.3 (no cniVersion, or 0.2.0) gets a result without
// interfaces; the attachment is still there and must be in network-status, with its IPs.
func TestStatusOfPre03Delegate(t *testing.T) {
	n := newNode(t)
	n.nad("default", "old-net", `{"type": "macvlan", "master": "eth0", "mode": "bridge",
	  "ipam": {"type": "host-local", "dataDir": "`+n.ipamDir+`", "subnet": "192.168.3.0/24"}}`, nil)
	p := n.pod("p1", "old-net")
	if _, err := p.add(); err != nil {
		t.Fatal(err)
	}
	links := p.links()
	st := p.status()
	if len(st) != 2 {
		t.Fatalf("network-status has %d entries, want 2 (eth0 and net1): %+v", len(st), st)
	}
	if st[1].Name != "default/old-net" || st[1].Interface != "net1" || len(st[1].IPs) != 1 || st[1].IPs[0] != links["net1"][0] {
		t.Errorf("net1 entry = %+v, pod net1 has %v", st[1], links["net1"])
	}
	if err := p.del(); err != nil {
		t.Fatal(err)
	}
}

// Multus hands a selection's mac and ips to the delegate in CNI_ARGS (MAC=, IP=) as well as
// through the mac/ips capabilities, and NADs written for it rely on that: most sriov and
// macvlan NADs declare no capabilities. The requested MAC must reach the pod all the same.
func TestSelectionMACWithoutCapability(t *testing.T) {
	n := newNode(t)
	n.nad("default", "plain", n.macvlanConf("plain", "192.168.1.0/24"), nil)
	p := n.pod("p1", `[{"name": "plain", "mac": "02:11:22:33:44:66"}]`)
	if _, err := p.add(); err != nil {
		t.Fatal(err)
	}
	var mac string
	p.ns.Do(func(ns.NetNS) error {
		if l, err := netlink.LinkByName("net1"); err == nil {
			mac = l.Attrs().HardwareAddr.String()
		}
		return nil
	})
	if mac != "02:11:22:33:44:66" {
		t.Errorf("net1 mac = %q, want the requested 02:11:22:33:44:66", mac)
	}
	if st := p.status(); st[1].Mac != "02:11:22:33:44:66" {
		t.Errorf("network-status mac = %q", st[1].Mac)
	}
	if err := p.del(); err != nil {
		t.Fatal(err)
	}
}

// The upstream sriov-cni NAD as usually written (no capabilities): the pod's requested MAC
// reaches the VF through CNI_ARGS MAC=, as it does under Multus, and DEL gives the VF its own
// MAC back.
func TestSriovSelectionMACWithoutCapability(t *testing.T) {
	n := newNode(t)
	_, macs := n.sriovNode(1)
	n.nad("default", "sriov-net", `{"cniVersion": "1.0.0", "type": "sriov",
	  "ipam": {"type": "host-local", "dataDir": "`+n.ipamDir+`", "subnet": "10.56.217.0/24"}}`, nil)
	p := n.pod("cnf", `[{"name": "sriov-net", "deviceID": "0000:00:12.0", "mac": "02:00:00:aa:bb:01"}]`)
	if _, err := p.add(); err != nil {
		t.Fatal(err)
	}
	if st := p.status(); len(st) != 2 || st[1].Mac != "02:00:00:aa:bb:01" {
		t.Errorf("network-status = %+v, want net1 with mac 02:00:00:aa:bb:01", st)
	}
	if err := p.del(); err != nil {
		t.Fatal(err)
	}
	n.host.Do(func(ns.NetNS) error {
		if l, err := netlink.LinkByName("mnvf0"); err != nil || l.Attrs().HardwareAddr.String() != macs["mnvf0"] {
			t.Errorf("VF not back as mnvf0 with its own MAC after DEL: %v", err)
		}
		return nil
	})
}
