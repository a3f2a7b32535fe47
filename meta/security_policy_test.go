package meta_test

import (
	"net"
	"os/exec"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// uplinks gives the node's namespace what a real node has: uplink0 carries the IPv4 default
// route, the bridge br-up (with the port upslave0) the IPv6 one.
func (n *node) uplinks() {
	n.t.Helper()
	err := n.host.Do(func(ns.NetNS) error {
		for _, name := range []string{"uplink0", "upslave0"} {
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
				return err
			}
		}
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br-up"}}); err != nil {
			return err
		}
		br, _ := netlink.LinkByName("br-up")
		slave, _ := netlink.LinkByName("upslave0")
		if err := netlink.LinkSetMaster(slave, br); err != nil {
			return err
		}
		for _, name := range []string{"uplink0", "uplink0p", "upslave0", "upslave0p", "br-up"} {
			l, _ := netlink.LinkByName(name)
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		up, _ := netlink.LinkByName("uplink0")
		a4, _ := netlink.ParseAddr("198.51.100.2/24")
		a6, _ := netlink.ParseAddr("2001:db8:1::2/64")
		a6.Flags = 0x02 // IFA_F_NODAD: usable at once
		if err := netlink.AddrAdd(up, a4); err != nil {
			return err
		}
		if err := netlink.AddrAdd(br, a6); err != nil {
			return err
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index, Gw: net.ParseIP("198.51.100.1")}); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: br.Attrs().Index, Gw: net.ParseIP("2001:db8:1::1")})
	})
	if err != nil {
		n.t.Fatal(err)
	}
}

// hostLink says where a link is: "host" when it is still in the node's namespace.
func (n *node) hostLink(name string) string {
	var where string
	n.host.Do(func(ns.NetNS) error {
		if _, err := netlink.LinkByName(name); err == nil {
			where = "host"
		}
		return nil
	})
	return where
}

func (n *node) hostDefaultRoutes() int {
	var count int
	n.host.Do(func(ns.NetNS) error {
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			rs, _ := netlink.RouteList(nil, fam)
			for _, r := range rs {
				if r.Dst == nil || r.Dst.IP.IsUnspecified() {
					count++
				}
			}
		}
		return nil
	})
	return count
}

func wantRefused(t *testing.T, what string, err error, parts ...string) {
	t.Helper()
	t.Logf("%s: %v", what, err)
	if err == nil {
		t.Errorf("%s: ADD succeeded, want it refused", what)
		return
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: err = %v\nwant it to name %q", what, err, p)
		}
	}
}

// Issue 12.3: a tenant's host-device NAD naming the node's uplink moved it into the pod, taking
// the node off the network. No NAD, not even a trusted one, may take a link that carries a
// default route (IPv4 or IPv6), its bridge's ports, or one reached through hwaddr or a pciBusID
// path; the default-network annotation is judged the same way. The node keeps its links and
// routes.
func TestSecurityHostDeviceCannotTakeUplink(t *testing.T) {
	n := newNode(t)
	n.uplinks()
	var mac string
	n.host.Do(func(ns.NetNS) error {
		l, _ := netlink.LinkByName("uplink0")
		mac = l.Attrs().HardwareAddr.String()
		return nil
	})
	hd := func(name, fields string) string {
		return `{"cniVersion": "1.0.0", "name": "` + name + `", "type": "host-device", ` + fields + `}`
	}
	n.nad("default", "steal", hd("steal", `"device": "uplink0"`), nil)
	n.nad("default", "steal-port", hd("steal-port", `"device": "upslave0"`), nil)
	n.nad("default", "steal-mac", hd("steal-mac", `"hwaddr": "`+mac+`"`), nil)
	n.nad("default", "steal-path", hd("steal-path", `"pciBusID": "../../../class/net/uplink0/device"`), nil)
	n.nad("default", "steal-rc", hd("steal-rc", `"runtimeConfig": {"deviceID": "../../../class/net/uplink0/device"}`), nil)
	n.nad("default", "any-device", hd("any-device", `"capabilities": {"deviceID": true}`), nil)
	n.nad("kube-system", "admin-steal", hd("admin-steal", `"device": "uplink0"`), nil)

	cases := []struct {
		pod, networks string
		want          []string
	}{
		{"p1", "steal", []string{"pod default/p1", "network default/steal", "plugin 1 (host-device)", "device uplink0", "IPv4 default route"}},
		{"p2", "steal-port", []string{"default/steal-port", "device upslave0", "slave of br-up", "IPv6 default route"}},
		{"p3", "steal-mac", []string{"default/steal-mac", "hwaddr " + mac + " (host link uplink0)"}},
		{"p4", "steal-path", []string{"default/steal-path", "pciBusID ../../../class/net/uplink0/device refused: want a PCI address"}},
		{"p5", "steal-rc", []string{"default/steal-rc", "runtimeConfig.deviceID ../../../class/net/uplink0/device refused"}},
		{"p6", `[{"name": "any-device", "deviceID": "../../../class/net/uplink0/device"}]`, []string{"default/any-device", `deviceID "../../../class/net/uplink0/device" refused`}},
		{"p7", "kube-system/admin-steal", []string{"kube-system/admin-steal", "no NAD may take it"}},
	}
	for _, c := range cases {
		_, err := n.pod(c.pod, c.networks).add()
		wantRefused(t, c.networks, err, c.want...)
	}
	// eth0 of the pod from a tenant NAD that takes the uplink.
	_, err := n.pod("p8", "", [2]string{"MULTINET_DEFAULT_NETWORK", "default/steal"}).add()
	wantRefused(t, "default-network default/steal", err, "network default/steal", "device uplink0")

	for _, l := range []string{"uplink0", "upslave0", "br-up"} {
		if n.hostLink(l) != "host" {
			t.Errorf("%s is gone from the node", l)
		}
	}
	if r := n.hostDefaultRoutes(); r != 2 {
		t.Errorf("node has %d default routes after the refused ADDs, want its 2", r)
	}
	if l := n.leases(); len(l) != 0 {
		t.Errorf("leases after refused ADDs = %v", l)
	}
}

// Issue 12.3: macvlan/ipvlan/vlan on the node's uplink put a tenant's pod on the
// infrastructure L2. No NAD may attach to a default-route link (also not by leaving master
// empty, which means the default route's link), trusted ones neither; other host links stay
// open to trusted NADs unless the operator lists them in policy.protectedLinks.
func TestSecurityTenantCannotAttachToUplink(t *testing.T) {
	n := newNode(t)
	n.uplinks()
	mv := func(name, master string) string {
		m := ""
		if master != "" {
			m = `"master": "` + master + `", `
		}
		return `{"cniVersion": "1.0.0", "name": "` + name + `", "type": "macvlan", ` + m + `"mode": "bridge",
		  "ipam": {"type": "host-local", "dataDir": "` + n.ipamDir + `", "subnet": "192.168.7.0/24"}}`
	}
	n.nad("default", "mv-uplink", mv("mv-uplink", "uplink0"), nil)
	n.nad("default", "mv-default", mv("mv-default", ""), nil)
	n.nad("default", "ipvlan-br", `{"cniVersion": "1.0.0", "name": "ipvlan-br", "type": "ipvlan", "master": "br-up"}`, nil)
	n.nad("default", "vlan-port", `{"cniVersion": "1.0.0", "name": "vlan-port", "type": "vlan", "master": "upslave0", "vlanId": 7}`, nil)
	n.nad("default", "chained", `{"cniVersion": "1.0.0", "name": "chained", "plugins": [
	  {"type": "macvlan", "master": "eth0", "ipam": {"type": "host-local", "dataDir": "`+n.ipamDir+`", "subnet": "192.168.8.0/24"}},
	  {"type": "vlan", "master": "uplink0", "vlanId": 8}]}`, nil)
	n.nad("kube-system", "mgmt", mv("mgmt", "uplink0"), nil)
	n.nad("kube-system", "data", mv("data", "uplink0p"), nil)

	for _, c := range []struct{ networks, want string }{
		{"mv-uplink", "plugin 1 (macvlan): master uplink0 refused: the link uplink0 carries the node's IPv4 default route; no NAD may attach to it"},
		{"mv-default", "master uplink0 refused"},
		{"ipvlan-br", "master br-up refused: the link br-up carries the node's IPv6 default route"},
		{"vlan-port", "master upslave0 refused: the link upslave0 is a slave of br-up"},
		{"chained", "plugin 2 (vlan): master uplink0 refused"},
	} {
		_, err := n.pod("p-"+c.networks, c.networks).add()
		wantRefused(t, c.networks, err, "default/"+c.networks, c.want)
	}
	if l := n.leases(); len(l) != 0 {
		t.Errorf("leases after refused ADDs = %v", l)
	}

	// Not even the admin's NAD may share the uplink's L2 with a pod...
	_, err := n.pod("admin", "kube-system/mgmt").add()
	wantRefused(t, "trusted macvlan on the uplink", err, "kube-system/mgmt", "master uplink0 refused: the link uplink0 carries the node's IPv4 default route; no NAD may attach to it")
	// ...while it may use another host link, as under Multus...
	p := n.pod("admin", "kube-system/data")
	if _, err := p.add(); err != nil {
		t.Fatalf("trusted macvlan on a data link: %v", err)
	}
	if got := keys(p.links()); len(got) != 2 {
		t.Errorf("pod interfaces = %v, want eth0 and net1", got)
	}
	if err := p.del(); err != nil {
		t.Fatal(err)
	}
	// ...until the operator protects that link from every NAD.
	n.conf = n.multinetConf(map[string]interface{}{"networkDir": n.netDir, "policy": map[string]interface{}{"protectedLinks": []string{"uplink0p"}}})
	_, err = n.pod("admin2", "kube-system/data").add()
	wantRefused(t, "protectedLinks", err, "kube-system/data", "uplink0p is in policy.protectedLinks; no NAD may attach to it")
}

// Issue 12.3: a bridge NAD onto the node's bridge with isGateway gives the bridge a gateway
// address (forceAddress replaces the node's): no NAD may join a default-route bridge at all.
func TestSecurityBridgeCannotReconfigureHostBridge(t *testing.T) {
	n := newNode(t)
	n.uplinks()
	br := func(name string, gw bool) string {
		g := ""
		if gw {
			g = `"isGateway": true, "forceAddress": true, `
		}
		return `{"cniVersion": "1.0.0", "name": "` + name + `", "type": "bridge", "bridge": "br-up", ` + g + `
		  "ipam": {"type": "host-local", "dataDir": "` + n.ipamDir + `", "subnet": "2001:db8:1::/64"}}`
	}
	n.nad("default", "join", br("join", false), nil)
	n.nad("kube-system", "gw", br("gw", true), nil)
	_, err := n.pod("p1", "join").add()
	wantRefused(t, "tenant bridge", err, "default/join", "plugin 1 (bridge): bridge br-up refused", "no NAD may attach to it")
	_, err = n.pod("p2", "kube-system/gw").add()
	wantRefused(t, "trusted bridge with isGateway", err, "kube-system/gw", "bridge br-up refused", "no NAD may attach to it")
	var addrs []string
	n.host.Do(func(ns.NetNS) error {
		l, _ := netlink.LinkByName("br-up")
		as, _ := netlink.AddrList(l, netlink.FAMILY_V6)
		for _, a := range as {
			if a.IP.IsGlobalUnicast() {
				addrs = append(addrs, a.IPNet.String())
			}
		}
		return nil
	})
	if len(addrs) != 1 || addrs[0] != "2001:db8:1::2/64" {
		t.Errorf("br-up addresses after the refused ADDs = %v, want only the node's 2001:db8:1::2/64", addrs)
	}
}

// Issue 12.10: a pod's portMappings reached a tenant NAD's portmap plugin: host DNAT on any
// port (22, 10250) around PodSecurity's hostPort rules. They are honoured only for pods of
// trusted namespaces or where policy.capabilities allows; a tenant NAD cannot write them into
// its runtimeConfig either. No DNAT rule is left on the node.
func TestSecurityPortMappingsFromAnnotation(t *testing.T) {
	n := newNode(t)
	chain := func(name, extra string) string {
		return `{"cniVersion": "1.0.0", "name": "` + name + `", "plugins": [
		  {"type": "macvlan", "master": "eth0", "ipam": {"type": "host-local", "dataDir": "` + n.ipamDir + `", "subnet": "192.168.9.0/24"}},
		  {"type": "portmap", "capabilities": {"portMappings": true}` + extra + `}]}`
	}
	n.nad("default", "pm", chain("pm", ""), nil)
	n.nad("default", "pm-static", chain("pm-static", `, "runtimeConfig": {"portMappings": [{"hostPort": 10250, "containerPort": 80, "protocol": "tcp"}]}`), nil)
	nat := func() string {
		var out []byte
		n.host.Do(func(ns.NetNS) error {
			out, _ = exec.Command("iptables-save", "-t", "nat").CombinedOutput()
			return nil
		})
		return string(out)
	}
	ask := `[{"name": "pm", "portMappings": [{"hostPort": 22, "containerPort": 2222, "protocol": "tcp"}]}]`
	_, err := n.pod("p1", ask).add()
	wantRefused(t, "tenant portMappings", err, "pod default/p1", "network default/pm", "plugin 2 (portmap)", "portMappings from the pod's annotation refused")
	_, err = n.pod("p2", "pm-static").add()
	wantRefused(t, "tenant NAD runtimeConfig", err, "default/pm-static", "plugin 2 (portmap): runtimeConfig.portMappings refused")
	if rules := nat(); strings.Contains(rules, "--dport 22 ") || strings.Contains(rules, "--dport 10250 ") {
		t.Errorf("host DNAT left after refused ADDs:\n%s", rules)
	}
	if l := n.leases(); len(l) != 0 {
		t.Errorf("leases after refused ADDs = %v", l)
	}

	// The operator can allow it to a namespace; then the mapping works (and goes with DEL).
	n.conf = n.multinetConf(map[string]interface{}{"networkDir": n.netDir,
		"policy": map[string]interface{}{"capabilities": map[string][]string{"portMappings": {"default"}}}})
	p := n.pod("p3", `[{"name": "pm", "portMappings": [{"hostPort": 18022, "containerPort": 2222, "protocol": "tcp"}]}]`)
	if _, err := p.add(); err != nil {
		t.Fatalf("allowed portMappings: %v", err)
	}
	if rules := nat(); !strings.Contains(rules, "--dport 18022 ") {
		t.Errorf("no DNAT for the allowed mapping:\n%s", rules)
	}
	if err := p.del(); err != nil {
		t.Fatal(err)
	}
}

// Issue 12.3/12.4 on an SR-IOV node: a VF whose netdev the node itself uses (here it carries the
// default route) is taken by no sriov NAD, whoever wrote it; and with policy.sriov a tenant's
// NAD asking for trust on is refused before the VF is touched.
func TestSecuritySriovNADCannotTakeHostVFOrSetTrust(t *testing.T) {
	n := newNode(t)
	_, macs := n.sriovNode(2)
	err := n.host.Do(func(ns.NetNS) error {
		vf, _ := netlink.LinkByName("mnvf1")
		peer, _ := netlink.LinkByName("mnvf1p")
		netlink.LinkSetUp(peer)
		if err := netlink.LinkSetUp(vf); err != nil {
			return err
		}
		a, _ := netlink.ParseAddr("198.51.100.2/24")
		if err := netlink.AddrAdd(vf, a); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: vf.Attrs().Index, Gw: net.ParseIP("198.51.100.1")})
	})
	if err != nil {
		t.Fatal(err)
	}
	checkpoint := n.write(n.dir, "kubelet_internal_checkpoint", `{"Data":{"PodDeviceEntries":[
	  {"PodUID":"uid-cnf","ContainerName":"app","ResourceName":"intel.com/sriov_netdevice","DeviceIDs":{"-1":["0000:00:12.0"]}}]},"Checksum":1}`)
	n.conf = n.multinetConf(map[string]interface{}{"networkDir": n.netDir, "kubeletCheckpoint": checkpoint,
		"podResourcesSocket": n.dir + "/no-kubelet.sock", "policy": map[string]interface{}{"sriov": map[string]interface{}{"tenantAdminFields": []string{"vlan"}}}})
	n.nad("default", "sriov-any", `{"cniVersion": "1.0.0", "type": "sriov"}`, nil)
	n.nad("kube-system", "sriov-admin", `{"cniVersion": "1.0.0", "type": "sriov"}`, nil)
	n.nad("default", "sriov-trust", `{"cniVersion": "1.0.0", "type": "sriov", "trust": "on"}`,
		map[string]string{"k8s.v1.cni.cncf.io/resourceName": "intel.com/sriov_netdevice"})

	_, err = n.pod("p1", `[{"name": "sriov-any", "deviceID": "0000:00:12.1"}]`).add()
	wantRefused(t, "tenant takes the host's VF", err, "network default/sriov-any", "plugin 1 (sriov): deviceID 0000:00:12.1 (host link mnvf1) refused",
		"IPv4 default route; no NAD may take it")
	_, err = n.pod("p2", `[{"name": "sriov-admin", "namespace": "kube-system", "deviceID": "0000:00:12.1"}]`).add()
	wantRefused(t, "trusted NAD takes the host's VF", err, "network kube-system/sriov-admin", "no NAD may take it")
	_, err = n.pod("cnf", "sriov-trust", [2]string{"K8S_POD_UID", "uid-cnf"}).add()
	wantRefused(t, "tenant sets trust", err, "pod default/cnf", "network default/sriov-trust", "plugin 1 (sriov): trust on refused")

	n.host.Do(func(ns.NetNS) error {
		for _, vf := range []string{"mnvf0", "mnvf1"} {
			if l, err := netlink.LinkByName(vf); err != nil || l.Attrs().HardwareAddr.String() != macs[vf] {
				t.Errorf("VF %s not on the node with its own MAC after the refused ADDs: %v", vf, err)
			}
		}
		return nil
	})
	if r := n.hostDefaultRoutes(); r != 1 {
		t.Errorf("node has %d default routes, want its 1 (through mnvf1)", r)
	}
}

// A tenant's ptp NAD whose pod address is the node's gateway (198.51.100.1) makes ptp route
// 198.51.100.1/32 on the node into the pod: the node's default route then leads to the pod.
// Tenant ptp and gateway bridges may not route networks that overlap the node's own; the node
// keeps reaching its gateway through uplink0.
func TestSecurityTenantCannotRouteNodeNetworks(t *testing.T) {
	n := newNode(t)
	n.uplinks()
	ptp := func(name, ipam string) string {
		return `{"cniVersion": "1.0.0", "name": "` + name + `", "type": "ptp", "ipam": ` + ipam + `}`
	}
	n.nad("default", "hijack", ptp("hijack", `{"type": "static", "addresses": [{"address": "198.51.100.1/32"}]}`), nil)
	n.nad("default", "overlap", ptp("overlap", `{"type": "host-local", "dataDir": "`+n.ipamDir+`", "ranges": [[{"subnet": "198.51.100.0/24"}]]}`), nil)
	n.nad("default", "asked", `{"cniVersion": "1.0.0", "name": "asked", "type": "ptp", "capabilities": {"ips": true}, "ipam": {"type": "static"}}`, nil)
	n.nad("default", "ok-ptp", ptp("ok-ptp", `{"type": "host-local", "dataDir": "`+n.ipamDir+`", "subnet": "10.77.0.0/24"}`), nil)
	_, err := n.pod("p1", "hijack").add()
	wantRefused(t, "pod at the node's gateway", err, "network default/hijack", "plugin 1 (ptp): address range 198.51.100.1/32 refused",
		"the node's IPv4 default gateway 198.51.100.1")
	_, err = n.pod("p2", "overlap").add()
	wantRefused(t, "subnet of the node's uplink", err, "network default/overlap", "198.51.100.0/24 refused: it overlaps the node's")
	_, err = n.pod("p3", `[{"name": "asked", "ips": ["198.51.100.1/24"]}]`).add()
	wantRefused(t, "pod's ips", err, "network default/asked", "198.51.100.1/24 refused")
	var via string
	n.host.Do(func(ns.NetNS) error {
		rs, err := netlink.RouteGet(net.ParseIP("198.51.100.1"))
		if err == nil && len(rs) > 0 {
			l, _ := netlink.LinkByIndex(rs[0].LinkIndex)
			via = l.Attrs().Name
		}
		return nil
	})
	if via != "uplink0" {
		t.Errorf("the node reaches its gateway through %q, want uplink0", via)
	}
	p := n.pod("p4", "ok-ptp")
	if _, err := p.add(); err != nil {
		t.Fatalf("a tenant ptp on its own subnet: %v", err)
	}
	if err := p.del(); err != nil {
		t.Fatal(err)
	}
}
