package meta

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/multinet-io/multinet/pci"
)

// nadDoc is a NAD manifest for the standalone network folder.
func nadDoc(ns, name, config string, annotations map[string]string) string {
	b, _ := json.Marshal(config)
	doc := fmt.Sprintf("apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: %s\n  namespace: %s\n", name, ns)
	if len(annotations) > 0 {
		doc += "  annotations:\n"
		for k, v := range annotations {
			doc += fmt.Sprintf("    %s: %s\n", k, v)
		}
	}
	return doc + "spec:\n  config: " + string(b) + "\n"
}

func policyPlanner(t *testing.T, policy string, docs ...string) *planner {
	t.Helper()
	// No host device may resolve by accident to one of this machine's.
	t.Setenv(pci.EnvSysfsRoot, t.TempDir())
	conf, nets := standalone(t, map[string]string{"nads": strings.Join(docs, "---\n")})
	if policy != "" {
		if err := json.Unmarshal([]byte(policy), &conf.Policy); err != nil {
			t.Fatal(err)
		}
		if err := conf.Policy.validate(); err != nil {
			t.Fatal(err)
		}
	}
	return &planner{conf: conf, nets: nets, devices: func(_ context.Context, _, _, _, res string) ([]string, error) {
		switch res {
		case "multinet.io/vhost":
			return []string{"vhost-3"}, nil
		case "evil.io/dp":
			return []string{"../../../class/net/eth0/device"}, nil
		}
		return []string{"0000:00:12.2", "0000:00:12.4"}, nil
	}}
}

func planFor(p *planner, ns, networks string, annotations ...string) ([]Delegate, error) {
	pod := podWith(networks)
	pod.Namespace = ns
	for i := 0; i+1 < len(annotations); i += 2 {
		pod.Annotations[annotations[i]] = annotations[i+1]
	}
	return p.plan(context.Background(), pod, "uid-1", "eth0")
}

func wantErr(t *testing.T, what string, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: planned, want it refused", what)
		return
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: err = %v\nwant it to name %q", what, err, p)
		}
	}
}

// Issue 12.3: with policy.tenantTypes on, a tenant NAD may run only the listed plugin types,
// in every plugin of its conflist and as IPAM; namespaceTypes widens one namespace; trusted
// namespaces are not limited. Unset, any type runs (Multus behaviour).
func TestSecurityTenantTypes(t *testing.T) {
	docs := []string{
		nadDoc("default", "chain", `{"cniVersion":"1.0.0","name":"chain","plugins":[{"type":"ptp","ipam":{"type":"host-local"}},{"type":"tuning"}]}`, nil),
		nadDoc("default", "dhcp", `{"cniVersion":"1.0.0","name":"dhcp","type":"ptp","ipam":{"type":"dhcp"}}`, nil),
		nadDoc("cnf", "chain", `{"cniVersion":"1.0.0","name":"chain","plugins":[{"type":"ptp","ipam":{"type":"host-local"}},{"type":"tuning"}]}`, nil),
		nadDoc("kube-system", "chain", `{"cniVersion":"1.0.0","name":"chain","plugins":[{"type":"ptp"},{"type":"tuning"}]}`, nil),
	}
	open := policyPlanner(t, "", docs...)
	if _, err := planFor(open, "default", "chain,dhcp"); err != nil {
		t.Errorf("without a policy: %v", err)
	}
	p := policyPlanner(t, `{"tenantTypes":["ptp","host-local"],"namespaceTypes":{"cnf":["ptp","host-local","tuning"]}}`, docs...)
	_, err := planFor(p, "default", "chain")
	wantErr(t, "chained tuning", err, "pod default/cnf-1", "network default/chain", `plugin 2 (tuning): type "tuning" refused`, "[ptp host-local]")
	_, err = planFor(p, "default", "dhcp")
	wantErr(t, "dhcp IPAM", err, "network default/dhcp", `plugin 1 (ptp): ipam type "dhcp" refused`)
	_, err = planFor(p, "default", "", DefaultNetworkAnnot, "default/chain")
	wantErr(t, "default-network annotation", err, "network default/chain", `type "tuning" refused`)
	if _, err := planFor(p, "cnf", "chain"); err != nil {
		t.Errorf("namespaceTypes: %v", err)
	}
	if _, err := planFor(p, "default", "kube-system/chain"); err != nil {
		t.Errorf("trusted NAD: %v", err)
	}
}

const sriovRes = "intel.com/sriov_netdevice"

// Issue 12.3: a tenant's sriov NAD with trust on (or another tenant's VLAN) reconfigures the
// PF's view of the VF. With policy.sriov, tenants set only the admin fields allowed to them
// (values that change nothing always pass), the pod's mac counts as the mac field, and VLANs
// per resource and namespace are checked (no vlan is VLAN 0, the PF's untagged network).
func TestSecuritySriovAdminFieldsAndVLANs(t *testing.T) {
	res := map[string]string{ResourceNameAnnot: sriovRes}
	docs := []string{
		nadDoc("default", "trusting", `{"cniVersion":"1.0.0","name":"trusting","type":"sriov","trust":"on","spoofchk":"on","vlan":0}`, res),
		nadDoc("default", "safe", `{"cniVersion":"1.0.0","name":"safe","type":"sriov","spoofchk":"on","trust":"off","vlan":150,"vlanQoS":0}`, res),
		nadDoc("default", "v300", `{"cniVersion":"1.0.0","name":"v300","type":"sriov","vlan":300}`, res),
		nadDoc("default", "untagged", `{"cniVersion":"1.0.0","name":"untagged","type":"sriov"}`, res),
		nadDoc("default", "nores", `{"cniVersion":"1.0.0","name":"nores","type":"sriov","vlan":150}`, nil),
		nadDoc("other", "v150", `{"cniVersion":"1.0.0","name":"v150","type":"sriov","vlan":150}`, res),
		nadDoc("kube-system", "admin", `{"cniVersion":"1.0.0","name":"admin","type":"sriov","vlan":300,"trust":"on"}`, res),
	}
	open := policyPlanner(t, "", docs...)
	if _, err := planFor(open, "default", "trusting,v300"); err != nil {
		t.Errorf("without a policy: %v", err)
	}
	p := policyPlanner(t, `{"sriov":{"tenantAdminFields":["vlan"],"namespaceAdminFields":{"other":["vlan","trust"]},
	  "vlans":[{"resourceName":"`+sriovRes+`","namespaces":["default"],"vlans":"100-199"},{"resourceName":"`+sriovRes+`","namespaces":["other"],"vlans":"200-299"}]}}`, docs...)
	_, err := planFor(p, "default", "trusting")
	wantErr(t, "trust on", err, "network default/trusting", "plugin 1 (sriov): trust on refused", "admin fields [vlan]")
	if _, err := planFor(p, "default", "safe"); err != nil {
		t.Errorf("allowed vlan and values that change nothing: %v", err)
	}
	_, err = planFor(p, "default", `[{"name":"safe","mac":"02:00:00:00:00:09"}]`)
	wantErr(t, "pod's mac", err, "network default/safe", "mac 02:00:00:00:00:09 from the pod's annotation refused")
	_, err = planFor(p, "default", "v300")
	wantErr(t, "vlan 300", err, "network default/v300", "vlan 300 refused", "namespace default on resource "+sriovRes)
	_, err = planFor(p, "default", "untagged")
	wantErr(t, "no vlan", err, "network default/untagged", "vlan 0 refused")
	_, err = planFor(p, "default", `[{"name":"nores","deviceID":"0000:00:12.6"}]`)
	wantErr(t, "no resourceName", err, "network default/nores", "needs the NAD's k8s.v1.cni.cncf.io/resourceName")
	_, err = planFor(p, "other", "v150")
	wantErr(t, "another namespace's vlan", err, "network other/v150", "vlan 150 refused", "namespace other")
	if _, err := planFor(p, "default", "kube-system/admin"); err != nil {
		t.Errorf("trusted NAD: %v", err)
	}
}

func pluginsOf(t *testing.T, d Delegate) []map[string]interface{} {
	t.Helper()
	var l struct {
		Plugins []map[string]interface{} `json:"plugins"`
	}
	if err := json.Unmarshal(d.Conf, &l); err != nil {
		t.Fatal(err)
	}
	return l.Plugins
}

// Issue 12.4: the device kubelet allocated went into the first plugin only, so a chained
// sriov (or host-device through runtimeConfig.deviceID) kept the NAD author's choice of VF.
// Every plugin gets it now; pciBusID only ever holds a PCI address (a vhost-user slot goes as
// deviceID only), a device ID from kubelet that is a path is refused, and a host-device that
// would prefer its own device over the allocated one is refused.
func TestSecurityAllocatedDeviceInEveryPlugin(t *testing.T) {
	res := map[string]string{ResourceNameAnnot: sriovRes}
	p := policyPlanner(t, "",
		nadDoc("default", "chain", `{"cniVersion":"1.0.0","name":"chain","plugins":[{"type":"ptp"},
		  {"type":"sriov","deviceID":"0000:00:12.7","pciBusID":"0000:00:12.7"},
		  {"type":"host-device","runtimeConfig":{"deviceID":"0000:00:12.7"}}]}`, res),
		nadDoc("default", "hd-own", `{"cniVersion":"1.0.0","name":"hd-own","type":"host-device","device":"ens9"}`, res),
		nadDoc("default", "vhost", `{"cniVersion":"1.0.0","name":"vhost","type":"userspace","pciBusID":"0000:00:12.7"}`,
			map[string]string{ResourceNameAnnot: "multinet.io/vhost"}),
		nadDoc("default", "evil", `{"cniVersion":"1.0.0","name":"evil","type":"host-device"}`, map[string]string{ResourceNameAnnot: "evil.io/dp"}))
	ds, err := planFor(p, "default", "chain")
	if err != nil {
		t.Fatal(err)
	}
	pls := pluginsOf(t, ds[1])
	for i, pl := range pls {
		if pl["deviceID"] != "0000:00:12.2" {
			t.Errorf("plugin %d (%s): deviceID = %v, want the allocated 0000:00:12.2", i+1, pl["type"], pl["deviceID"])
		}
	}
	if pls[1]["pciBusID"] != "0000:00:12.2" || pls[2]["pciBusID"] != "0000:00:12.2" {
		t.Errorf("pciBusID: sriov %v, host-device %v; want the allocated device", pls[1]["pciBusID"], pls[2]["pciBusID"])
	}
	if rc, _ := pls[2]["runtimeConfig"].(map[string]interface{}); rc["deviceID"] != "0000:00:12.2" {
		t.Errorf("host-device runtimeConfig.deviceID = %v, want the allocated device", rc["deviceID"])
	}
	_, err = planFor(p, "default", "hd-own")
	wantErr(t, "host-device with its own device", err, "network default/hd-own", `plugin 1 (host-device): device "ens9" refused`, "resource "+sriovRes)

	ds, err = planFor(p, "default", "vhost")
	if err != nil {
		t.Fatalf("vhost-user slot: %v", err)
	}
	if pl := pluginsOf(t, ds[1])[0]; pl["deviceID"] != "vhost-3" || pl["pciBusID"] != nil {
		t.Errorf("vhost-user slot: deviceID %v, pciBusID %v; want vhost-3 and no pciBusID", pl["deviceID"], pl["pciBusID"])
	}
	_, err = planFor(p, "default", "evil")
	wantErr(t, "path from a device plugin", err, "network default/evil", `device "../../../class/net/eth0/device" from kubelet refused`)
}

// Issue 12.10 (bandwidth and the rest): the pod's bandwidth would override the limits a NAD's
// bandwidth plugin sets; it is refused for tenant pods unless policy.capabilities allows it
// ("*": everyone, as Multus). ips and mac stay the pod's, as under Multus; cni-args can be
// restricted the same way.
func TestSecurityPodCapabilities(t *testing.T) {
	docs := []string{nadDoc("default", "bw", `{"cniVersion":"1.0.0","name":"bw","plugins":[{"type":"ptp","capabilities":{"ips":true,"mac":true}},
	  {"type":"bandwidth","ingressRate":1000000,"ingressBurst":100000,"capabilities":{"bandwidth":true}}]}`, nil)}
	ask := `[{"name":"bw","bandwidth":{"ingressRate":100000000000,"ingressBurst":1000000000},"ips":["10.1.1.5/24"],"mac":"02:00:00:00:00:01"}]`
	p := policyPlanner(t, "", docs...)
	_, err := planFor(p, "default", ask)
	wantErr(t, "bandwidth", err, "network default/bw", "plugin 2 (bandwidth): bandwidth from the pod's annotation refused")
	if _, err := planFor(p, "kube-system", strings.Replace(ask, `"name":"bw"`, `"name":"bw","namespace":"default"`, 1)); err != nil {
		t.Errorf("pod of a trusted namespace: %v", err)
	}
	if _, err := planFor(p, "default", `[{"name":"bw","ips":["10.1.1.5/24"],"mac":"02:00:00:00:00:01","cni-args":{"x":"y"}}]`); err != nil {
		t.Errorf("ips, mac and cni-args: %v", err)
	}
	p = policyPlanner(t, `{"capabilities":{"bandwidth":["*"],"cni-args":[]}}`, docs...)
	if _, err := planFor(p, "default", ask); err != nil {
		t.Errorf("bandwidth allowed to all: %v", err)
	}
	_, err = planFor(p, "default", `[{"name":"bw","cni-args":{"x":"y"}}]`)
	wantErr(t, "restricted cni-args", err, "network default/bw", "cni-args from the pod's annotation refused")
}

// The default-route closure on a node whose uplink is a VLAN (here a macvlan) on a bond, with a multipath IPv6
// default route in another table: the VLAN, the bond, its slaves and every next hop's link are
// protected; a link the operator lists is protected even before it exists.
func TestSecurityReadHostProtectsWhatTheRoutesStandOn(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace")
	}
	host, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { host.Close(); testutils.UnmountNS(host) }()
	var hv *hostView
	err = host.Do(func(ns.NetNS) error {
		for _, n := range []string{"s0", "s1", "m0", "m1", "other0"} {
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: n}, PeerName: n + "p"}); err != nil {
				return err
			}
		}
		// A bond where the kernel has the driver, else a bridge: both are masters.
		var master netlink.Link = &netlink.Bond{LinkAttrs: netlink.LinkAttrs{Name: "agg0"}, Mode: netlink.BOND_MODE_ACTIVE_BACKUP}
		if netlink.LinkAdd(master) != nil {
			master = &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "agg0"}}
			if err := netlink.LinkAdd(master); err != nil {
				return err
			}
		}
		agg, _ := netlink.LinkByName("agg0")
		for _, n := range []string{"s0", "s1"} {
			l, _ := netlink.LinkByName(n)
			if err := netlink.LinkSetMaster(l, agg); err != nil {
				return fmt.Errorf("enslave %s: %w", n, err)
			}
		}
		// A macvlan, as the CI kernels here have no VLAN driver: the rule is the same.
		if err := netlink.LinkAdd(&netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: "agg0.10", ParentIndex: agg.Attrs().Index}, Mode: netlink.MACVLAN_MODE_BRIDGE}); err != nil {
			return fmt.Errorf("macvlan: %w", err)
		}
		for _, n := range []string{"agg0", "agg0.10", "m0", "m1", "m0p", "m1p", "s0", "s1"} {
			l, _ := netlink.LinkByName(n)
			netlink.LinkSetUp(l)
		}
		vl, _ := netlink.LinkByName("agg0.10")
		a, _ := netlink.ParseAddr("203.0.113.2/24")
		if err := netlink.AddrAdd(vl, a); err != nil {
			return err
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: vl.Attrs().Index, Gw: net.ParseIP("203.0.113.1")}); err != nil {
			return err
		}
		var hops []*netlink.NexthopInfo
		for _, n := range []string{"m0", "m1"} {
			l, _ := netlink.LinkByName(n)
			hops = append(hops, &netlink.NexthopInfo{LinkIndex: l.Attrs().Index, Gw: net.ParseIP("fe80::1")})
		}
		_, dst, _ := net.ParseCIDR("::/0")
		if err := netlink.RouteAdd(&netlink.Route{Dst: dst, Table: 100, MultiPath: hops}); err != nil {
			return fmt.Errorf("multipath route: %w", err)
		}
		hv, err = readHost(pci.New(t.TempDir()), []string{"later0"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"agg0.10", "agg0", "s0", "s1", "m0", "m1", "later0"} {
		if _, ok := hv.protected[name]; !ok {
			t.Errorf("%s not protected; protected: %v", name, hv.protected)
		}
	}
	if _, ok := hv.protected["other0"]; ok {
		t.Errorf("other0 carries nothing but is protected: %v", hv.protected["other0"])
	}
	if hv.defaultLink != "agg0.10" {
		t.Errorf("default link = %q, want agg0.10 (the main table's IPv4 default route)", hv.defaultLink)
	}
	if why := hv.protected["s1"].why; !strings.Contains(why, "s1 is a slave of agg0") || !strings.Contains(why, "IPv4 default route") {
		t.Errorf("why s1 is protected: %q", why)
	}
	p := &Policy{}
	if err := judgeLink(p, true, linkRef{field: "device", kind: "name", value: "s1", take: true}, "s1", hv); err == nil {
		t.Error("a trusted host-device may take a slave of the uplink bond")
	}
	if err := judgeLink(p, false, linkRef{field: "master", kind: "name", value: "m1"}, "m1", hv); err == nil {
		t.Error("a tenant macvlan may attach to a next hop of the IPv6 default route")
	}
	claims := ipamClaims(map[string]interface{}{"ipam": map[string]interface{}{"type": "whereabouts", "range": "203.0.113.64/26",
		"ipRanges": []interface{}{map[string]interface{}{"range": "fd00:9::/64"}}}}, nil)
	if err := judgeNodeNets(claims, hv); err == nil || !strings.Contains(err.Error(), "203.0.113.64/26 refused: it overlaps the node's network 203.0.113.0/24") {
		t.Errorf("whereabouts range inside the node's uplink network: %v", err)
	}
	if err := judgeNodeNets(claims[1:], hv); err != nil {
		t.Errorf("a range the node does not have: %v", err)
	}
	p.TenantLinks = []string{"other0p"}
	if err := judgeLink(p, false, linkRef{field: "master", kind: "name", value: "other0"}, "other0", hv); err == nil ||
		!strings.Contains(err.Error(), "policy.tenantLinks") {
		t.Errorf("tenantLinks: %v", err)
	}
	if err := judgeLink(p, false, linkRef{field: "bridge", kind: "name", value: "newbr"}, "newbr", hv); err != nil {
		t.Errorf("a bridge the plugin will create: %v", err)
	}
	// A VF's netdev: the tenant's choice (a deviceID in the annotation) is limited, kubelet's is not.
	if err := judgeLink(p, false, linkRef{field: "deviceID", kind: "pci", value: "0000:00:12.1"}, "other0", hv); err == nil {
		t.Error("tenantLinks: a device the pod picked is not limited")
	}
	if err := judgeLink(p, false, linkRef{field: "deviceID", kind: "pci", value: "0000:00:12.1", allocated: true}, "other0", hv); err != nil {
		t.Errorf("tenantLinks: the device kubelet allocated: %v", err)
	}
}

// Policy typos fail the config load, naming the field: a policy that silently allowed more
// than its author meant would be worse than none.
func TestPolicyConfigErrors(t *testing.T) {
	for policy, want := range map[string]string{
		`{"sriov":{"tenantAdminFields":["vlanid"]}}`:                      `"vlanid" is not an sriov admin field`,
		`{"sriov":{"vlans":[{"resourceName":"a/b","vlans":"100-5000"}]}}`: `policy.sriov.vlans[0] (a/b): vlans "100-5000"`,
		`{"sriov":{"vlans":[{"vlans":"100"}]}}`:                           "resourceName missing",
		`{"sriov":{"namespaceAdminFields":{"ns1":["Trust"]}}}`:            "namespaceAdminFields[ns1]",
	} {
		_, err := LoadConfig([]byte(`{"name":"m","type":"multinet","clusterNetwork":"/x","policy":` + policy + `}`))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("policy %s: err = %v, want %q", policy, err, want)
		}
	}
	c, err := LoadConfig([]byte(`{"name":"m","type":"multinet","clusterNetwork":"/x","policy":{"tenantTypes":[],"sriov":{"vlans":[{"resourceName":"a/b","vlans":"0, 100-199"}]}}}`))
	if err != nil || c.Policy.TenantTypes == nil || len(c.Policy.TenantTypes) != 0 {
		t.Errorf("an empty tenantTypes (no type at all for tenants) must stay set: %v %#v", err, c)
	}
	// The README's lock-down example loads as written.
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(readme), "To lock it down, set `policy`")
	_, example, _ := strings.Cut(rest, "```json\n")
	example, _, _ = strings.Cut(example, "```")
	var list struct {
		Plugins []json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(example), &list); err != nil || len(list.Plugins) != 1 {
		t.Fatalf("README example: %v\n%s", err, example)
	}
	if c, err := LoadConfig(list.Plugins[0]); err != nil || len(c.Policy.Sriov.VLANs) != 3 {
		t.Errorf("README example does not load: %v", err)
	}
}

// No NAD config, device ID or annotation may panic the policy (a node agent would crash for
// every pod): only errors come out.
func FuzzPolicyCheckNAD(f *testing.F) {
	f.Add(`{"plugins":[{"type":"host-device","device":"eth0","runtimeConfig":{"deviceID":"x"}},{"type":"sriov","vlan":"7","trust":1}]}`, "0000:00:12.1", "", true)
	f.Add(`{"plugins":[{"type":"bond","links":[{"name":"s0"},3,null]},{"type":"bridge","isGateway":"yes"},{"type":"macvlan","linkInContainer":"x"}]}`, "../x", "r/x", false)
	f.Add(`{"plugins":[null,{"type":"host-device","hwaddr":"zz","kernelpath":"/sys/devices/../x","pciBusID":7}]}`, "", "", false)
	f.Add(`{"plugins":{"type":"x"}}`, "vhost-1", "multinet.io/vhost", true)
	pol := &Policy{TenantTypes: []string{"sriov", "bridge"}, TenantLinks: []string{"ens1"}, ProtectedLinks: []string{"s0"},
		Sriov:        SriovPolicy{TenantAdminFields: []string{"vlan"}, VLANs: []VLANRule{{ResourceName: "r/x", VLANs: "1-9"}}},
		Capabilities: map[string][]string{"cni-args": nil}}
	hv := &hostView{protected: map[string]protection{"eth0": {why: "eth0 carries the node's IPv4 default route"}, "s0": {why: "s0 is in policy.protectedLinks", operator: true}},
		exists: map[string]bool{"eth0": true, "s0": true, "ens2": true}, byMAC: map[string][]string{}, defaultLink: "eth0", sys: pci.New(f.TempDir())}
	f.Fuzz(func(t *testing.T, conf, deviceID, resource string, trusted bool) {
		pod := podWith("")
		d := &Delegate{Name: "default/x", Conf: []byte(conf), DeviceID: deviceID, ResourceName: resource,
			CapabilityArgs: map[string]interface{}{"portMappings": []int{1}, "bandwidth": nil}}
		sel := &Selection{Name: "x", Namespace: "default", MAC: "02:00:00:00:00:01", CNIArgs: map[string]interface{}{"a": 1}}
		c := nadCheck{pod: pod, nad: "default/x", namespace: "default", trusted: trusted, d: d, sel: sel}
		_ = pol.checkNAD(c, &lazyHost{hv: hv, done: true})
	})
}
