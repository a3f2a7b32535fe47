package sriovcni

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/internal/netnstest"
	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/pci/pcitest"
)

// The reference plugins' host-local, installed by hack/deps.sh (containernetworking-plugins).
const cniBinDir = "/usr/lib/cni"

const (
	pfAddr   = "0000:00:02.0"
	dpdkAddr = "0000:00:12.3"
)

// node is a simulated SR-IOV node: a private netns standing in for the host, with a veth as PF
// netdev and veth links named in a fake sysfs tree as the PF's VFs 0-2, and VF 3 on vfio-pci.
type node struct {
	t       testing.TB
	host    ns.NetNS
	tree    *pcitest.Tree
	p       *Plugin
	ipamDir string
	origMAC map[string]string
}

func newNode(t testing.TB) *node {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and moves links between them")
	}
	if _, err := os.Stat(filepath.Join(cniBinDir, "host-local")); err != nil {
		t.Skipf("needs %s/host-local (hack/deps.sh installs containernetworking-plugins): %v", cniBinDir, err)
	}
	host := netnstest.New(t)
	tree := pcitest.New(t)
	tree.AddPF(pcitest.PF{Address: pfAddr, Vendor: "8086", Device: "10c9", Driver: "igb", Netdev: "mnpf0", TotalVFs: 7})
	n := &node{t: t, host: host, tree: tree, ipamDir: t.TempDir(), origMAC: map[string]string{}}
	// Veths for the PF and the VF netdevs: the dummy module may be missing, and neither reports VFs.
	netnstest.Veths(t, host, "mnpf0")
	n.origMAC = netnstest.Veths(t, host, "mnvf0", "mnvf1", "mnvf2")
	for i := 0; i < 3; i++ {
		tree.AddVF(pcitest.VF{PF: pfAddr, Index: i, Address: fmt.Sprintf("0000:00:12.%d", i), Vendor: "8086", Device: "10ca",
			Driver: "igbvf", Netdev: fmt.Sprintf("mnvf%d", i)})
	}
	tree.AddVF(pcitest.VF{PF: pfAddr, Index: 3, Address: dpdkAddr, Vendor: "8086", Device: "10ca", Driver: "vfio-pci", DefaultDriver: "igbvf"})
	n.p = &Plugin{Sys: pci.New(tree.Root), StateDir: filepath.Join(t.TempDir(), "sriov"), DevInfo: devinfo.Dir(t.TempDir()),
		Log: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	return n
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func (n *node) pod() ns.NetNS {
	n.t.Helper()
	p, err := testutils.NewNS()
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { p.Close(); testutils.UnmountNS(p) })
	return p
}

// conf is a netconf for VF vf with host-local IPAM (ipam "" leaves it out) and extra fields.
func (n *node) conf(vf, ipam, extra string) []byte {
	// 1.1.0 although Debian's host-local speaks up to 1.0.0: the plugin asks it at 1.0.0.
	s := `{"cniVersion":"1.1.0","name":"sriov-net","type":"sriov","deviceID":"` + vf + `"`
	switch ipam {
	case "":
	case "default":
		s += `,"ipam":{"type":"host-local","subnet":"10.77.0.0/24","dataDir":"` + n.ipamDir + `"}`
	default:
		s += `,"ipam":` + ipam
	}
	return []byte(s + extra + "}")
}

func (n *node) args(cid string, pod ns.NetNS, conf []byte) Args {
	path := ""
	if pod != nil {
		path = pod.Path()
	}
	return Args{ContainerID: cid, Netns: path, IfName: "net1", Path: cniBinDir, StdinData: conf}
}

func (n *node) add(a Args) (*current.Result, error) {
	var res *current.Result
	err := n.host.Do(func(ns.NetNS) error {
		var err error
		res, err = n.p.Add(a)
		return err
	})
	return res, err
}

func (n *node) del(a Args) error {
	return n.host.Do(func(ns.NetNS) error { return n.p.Del(a) })
}

func (n *node) check(a Args) error {
	return n.host.Do(func(ns.NetNS) error { return n.p.Check(a) })
}

// link returns a link by name in a namespace, nil when there is none.
func link(t testing.TB, where ns.NetNS, name string) netlink.Link {
	t.Helper()
	var l netlink.Link
	_ = where.Do(func(ns.NetNS) error {
		l, _ = netlink.LinkByName(name)
		return nil
	})
	return l
}

func addrs(t *testing.T, where ns.NetNS, name string) []string {
	t.Helper()
	var out []string
	_ = where.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		as, _ := netlink.AddrList(l, netlink.FAMILY_V4)
		for _, a := range as {
			out = append(out, a.IPNet.String())
		}
		return nil
	})
	return out
}

// leases lists the addresses host-local holds for the network.
func (n *node) leases() []string {
	es, _ := os.ReadDir(filepath.Join(n.ipamDir, "sriov-net"))
	var out []string
	for _, e := range es {
		if net.ParseIP(e.Name()) != nil {
			out = append(out, e.Name())
		}
	}
	return out
}

// stateFiles lists the plugin's cache and ownership files (locks excluded).
func (n *node) stateFiles() []string {
	var out []string
	for _, d := range []string{"cache", "vf"} {
		es, _ := os.ReadDir(filepath.Join(n.p.StateDir, d))
		for _, e := range es {
			out = append(out, d+"/"+e.Name())
		}
	}
	return out
}

// assertVFHome checks the VF's netdev is back in the host as it was, and nothing is left.
func (n *node) assertVFHome(name string, pods ...ns.NetNS) {
	n.t.Helper()
	l := link(n.t, n.host, name)
	if l == nil {
		n.t.Fatalf("%s is not back in the host namespace", name)
	}
	if got := l.Attrs().HardwareAddr.String(); got != n.origMAC[name] {
		n.t.Errorf("%s mac %s, want the original %s", name, got, n.origMAC[name])
	}
	if l.Attrs().MTU != 1500 {
		n.t.Errorf("%s mtu %d, want 1500", name, l.Attrs().MTU)
	}
	for _, p := range pods {
		if l := link(n.t, p, "net1"); l != nil {
			n.t.Errorf("pod %s still has net1", p.Path())
		}
	}
}

func (n *node) assertClean() {
	n.t.Helper()
	if f := n.stateFiles(); len(f) != 0 {
		n.t.Errorf("state left behind: %v", f)
	}
	if l := n.leases(); len(l) != 0 {
		n.t.Errorf("IPAM leases left behind: %v", l)
	}
	es, _ := os.ReadDir(filepath.Join(n.p.DevInfo.Root(), "cni"))
	if len(es) != 0 {
		n.t.Errorf("device-info files left behind: %d", len(es))
	}
}

func TestAddDelNetdevMode(t *testing.T) {
	n := newNode(t)
	pod := n.pod()
	a := n.args("c1", pod, n.conf("0000:00:12.0", "default", `,"mac":"02:00:00:00:77:01"`))
	res, err := n.add(a)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Interfaces) != 1 {
		t.Fatalf("result interfaces %+v", res.Interfaces)
	}
	i := res.Interfaces[0]
	if i.Name != "net1" || i.Mac != "02:00:00:00:77:01" || i.Sandbox != pod.Path() || i.PciID != "0000:00:12.0" {
		t.Errorf("result interface %+v", i)
	}
	if len(res.IPs) != 1 || res.IPs[0].Interface == nil || *res.IPs[0].Interface != 0 || !strings.HasPrefix(res.IPs[0].Address.String(), "10.77.0.") {
		t.Fatalf("result ips %+v", res.IPs)
	}
	l := link(t, pod, "net1")
	if l == nil {
		t.Fatal("no net1 in the pod")
	}
	if l.Attrs().HardwareAddr.String() != "02:00:00:00:77:01" || l.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("net1 in pod: mac %s flags %v", l.Attrs().HardwareAddr, l.Attrs().Flags)
	}
	if got := addrs(t, pod, "net1"); len(got) != 1 || got[0] != res.IPs[0].Address.String() {
		t.Errorf("net1 addresses %v, result says %s", got, res.IPs[0].Address.String())
	}
	if link(t, n.host, "mnvf0") != nil {
		t.Error("mnvf0 still in the host")
	}
	di, err := devinfo.Load(n.p.DevInfo.CNIPath("sriov-net", "c1", "net1"))
	if err != nil || di == nil || di.Type != "pci" || di.Pci.PciAddress != "0000:00:12.0" || di.Pci.PfPciAddress != pfAddr {
		t.Errorf("device-info %+v, %v", di, err)
	}
	if len(n.leases()) != 1 {
		t.Errorf("leases %v", n.leases())
	}
	// A second ADD of the same attachment (a runtime bug) must not overwrite what DEL needs.
	if _, err := n.add(n.args("c1", pod, n.conf("0000:00:12.1", "", ""))); err == nil || !strings.Contains(err.Error(), "already has interface net1 (vf 0000:00:12.0)") {
		t.Errorf("second ADD of c1/net1: %v", err)
	}
	if link(t, n.host, "mnvf1") == nil {
		t.Error("the refused second ADD moved mnvf1")
	}
	// The pod changes its MTU; DEL must put the host's back.
	_ = pod.Do(func(ns.NetNS) error { return netlink.LinkSetMTU(link(t, pod, "net1"), 1400) })

	if err := n.del(a); err != nil {
		t.Fatal(err)
	}
	n.assertVFHome("mnvf0", pod)
	n.assertClean()
	if err := n.del(a); err != nil {
		t.Fatalf("second DEL: %v", err)
	}
}

func TestDelWithoutCacheSucceeds(t *testing.T) {
	n := newNode(t)
	if err := n.del(n.args("never-added", n.pod(), n.conf("0000:00:12.0", "default", ""))); err != nil {
		t.Fatal(err)
	}
	// Even a netconf that does not parse: there is nothing to release.
	if err := n.del(Args{ContainerID: "x", IfName: "net1", StdinData: []byte(`{"name":"n"}`)}); err != nil {
		t.Fatal(err)
	}
}

func TestAddFailureAfterMoveLeavesNothing(t *testing.T) {
	n := newNode(t)
	pod := n.pod()
	// host-local refuses this range only after the netdev is already in the pod.
	bad := `{"type":"host-local","subnet":"10.77.0.0/24","rangeStart":"10.99.0.5","dataDir":"` + n.ipamDir + `"}`
	a := n.args("c1", pod, n.conf("0000:00:12.0", bad, `,"mac":"02:00:00:00:77:02"`))
	if _, err := n.add(a); err == nil || !strings.Contains(err.Error(), "ipam host-local") {
		t.Fatalf("err = %v, want the IPAM failure", err)
	}
	n.assertVFHome("mnvf0", pod)
	if l := link(t, pod, tmpName("0000:00:12.0")); l != nil {
		t.Error("temporary name left in the pod")
	}
	n.assertClean()
	// The VF is free again.
	a = n.args("c2", pod, n.conf("0000:00:12.0", "default", ""))
	if _, err := n.add(a); err != nil {
		t.Fatalf("ADD after the failed one: %v", err)
	}
	if err := n.del(a); err != nil {
		t.Fatal(err)
	}
}

func TestAddFailureAfterIPAMReleasesTheLease(t *testing.T) {
	n := newNode(t)
	pod := n.pod()
	// The device-info file is the last step; make it fail.
	blocker := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	n.p.DevInfo = devinfo.Dir(blocker)
	a := n.args("c1", pod, n.conf("0000:00:12.0", "default", `,"mac":"02:00:00:00:77:05"`))
	if _, err := n.add(a); err == nil || !strings.Contains(err.Error(), "device-info") {
		t.Fatalf("err = %v, want the device-info failure", err)
	}
	n.assertVFHome("mnvf0", pod)
	if f := n.stateFiles(); len(f) != 0 {
		t.Errorf("state left behind: %v", f)
	}
	if l := n.leases(); len(l) != 0 {
		t.Errorf("IPAM lease left behind: %v", l)
	}
}

func TestAddFailsWhenPodHasTheName(t *testing.T) {
	n := newNode(t)
	pod := n.pod()
	_ = pod.Do(func(ns.NetNS) error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "net1"}, PeerName: "other"})
	})
	_, err := n.add(n.args("c1", pod, n.conf("0000:00:12.0", "default", "")))
	if err == nil || !strings.Contains(err.Error(), "already has an interface net1") {
		t.Fatalf("err = %v", err)
	}
	n.assertVFHome("mnvf0")
	n.assertClean()
}

func TestAddRefusesBadDevicesBeforeTouchingAnything(t *testing.T) {
	n := newNode(t)
	n.tree.AddNIC(pcitest.NIC{Address: "0000:00:05.0", Vendor: "8086", Device: "100e", Driver: "e1000", Netdev: "mnnic0"})
	pod := n.pod()
	cases := map[string]string{
		pfAddr:         "is an SR-IOV PF",
		"0000:00:05.0": "is not an SR-IOV VF",
		"0000:00:1f.0": "no such PCI device",
	}
	for dev, want := range cases {
		_, err := n.add(n.args("c1", pod, n.conf(dev, "default", "")))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), dev) {
			t.Errorf("deviceID %s: err = %v, want %q naming the device", dev, err, want)
		}
	}
	// The simulated PF (a dummy link) reports no VFs: admin settings cannot be applied, and
	// the error says so before anything moved.
	_, err := n.add(n.args("c1", pod, n.conf("0000:00:12.0", "default", `,"vlan":100`)))
	if err == nil || !strings.Contains(err.Error(), "vf 0000:00:12.0") || !strings.Contains(err.Error(), "pf mnpf0") {
		t.Errorf("vlan on a PF without a VF list: err = %v", err)
	}
	n.assertVFHome("mnvf0", pod)
	n.assertClean()
}

func TestConcurrentAddsOfOneVF(t *testing.T) {
	n := newNode(t)
	const racers = 4
	pods := make([]ns.NetNS, racers)
	for i := range pods {
		pods[i] = n.pod()
	}
	var wg sync.WaitGroup
	errs := make([]error, racers)
	for i := 0; i < racers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = n.add(n.args(fmt.Sprintf("racer%d", i), pods[i], n.conf("0000:00:12.0", "default", "")))
		}(i)
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("racers %d and %d both got the VF", winner, i)
		case err == nil:
			winner = i
		case !strings.Contains(err.Error(), "vf 0000:00:12.0: in use by container racer"):
			t.Errorf("racer %d: %v", i, err)
		}
	}
	if winner < 0 {
		t.Fatalf("nobody got the VF: %v", errs)
	}
	for i, err := range errs {
		if err != nil && !strings.Contains(err.Error(), fmt.Sprintf("racer%d (netns %s)", winner, pods[winner].Path())) {
			t.Errorf("racer %d error does not name the owner: %v", i, err)
		}
	}
	if link(t, pods[winner], "net1") == nil {
		t.Error("winner has no net1")
	}
	if len(n.leases()) != 1 {
		t.Errorf("leases %v: losers must not hold addresses", n.leases())
	}
	// A loser's DEL (the runtime cleans up a failed ADD) must not take the VF from the winner.
	loser := (winner + 1) % racers
	if err := n.del(n.args(fmt.Sprintf("racer%d", loser), pods[loser], n.conf("0000:00:12.0", "default", ""))); err != nil {
		t.Fatal(err)
	}
	if link(t, pods[winner], "net1") == nil {
		t.Fatal("a loser's DEL took the VF from the winner")
	}
	if err := n.del(n.args(fmt.Sprintf("racer%d", winner), pods[winner], n.conf("0000:00:12.0", "default", ""))); err != nil {
		t.Fatal(err)
	}
	n.assertVFHome("mnvf0", pods...)
	n.assertClean()
}

// podDies does what the kernel does to a physical VF netdev when its pod's netns is destroyed
// without a DEL: the netdev returns to the host under its pod name. sysfs then lists it there.
func (n *node) podDies(pod ns.NetNS, vf string) {
	n.t.Helper()
	err := pod.Do(func(host ns.NetNS) error {
		l, err := netlink.LinkByName("net1")
		if err != nil {
			return err
		}
		_ = netlink.LinkSetDown(l)
		return netlink.LinkSetNsFd(l, int(n.host.Fd()))
	})
	if err != nil {
		n.t.Fatal(err)
	}
	n.tree.SetNetdevs(vf, "net1")
	pod.Close()
	if err := testutils.UnmountNS(pod); err != nil {
		n.t.Fatal(err)
	}
}

func TestDelAfterPodNetnsIsGone(t *testing.T) {
	n := newNode(t)
	pod := n.pod()
	a := n.args("c1", pod, n.conf("0000:00:12.1", "default", `,"mac":"02:00:00:00:77:03"`))
	if _, err := n.add(a); err != nil {
		t.Fatal(err)
	}
	n.podDies(pod, "0000:00:12.1")
	if err := n.del(a); err != nil {
		t.Fatal(err)
	}
	n.assertVFHome("mnvf1")
	if link(t, n.host, "net1") != nil {
		t.Error("net1 still in the host")
	}
	n.assertClean()
}

func TestStaleOwnerTakeoverAndLateDel(t *testing.T) {
	n := newNode(t)
	podA, podB := n.pod(), n.pod()
	confA := n.conf("0000:00:12.0", "default", `,"mac":"02:00:00:00:aa:aa"`)
	confB := n.conf("0000:00:12.0", "default", `,"mac":"02:00:00:00:bb:bb"`)
	a := n.args("ctr-a", podA, confA)
	b := n.args("ctr-b", podB, confB)
	if _, err := n.add(a); err != nil {
		t.Fatal(err)
	}
	// While A's netns lives, B cannot have the VF.
	if _, err := n.add(b); err == nil || !strings.Contains(err.Error(), "in use by container ctr-a") {
		t.Fatalf("B's ADD while A lives: %v", err)
	}
	n.podDies(podA, "0000:00:12.0") // A's DEL never comes (yet)
	resB, err := n.add(b)
	if err != nil {
		t.Fatalf("B's ADD after A's netns vanished: %v", err)
	}
	if l := link(t, podB, "net1"); l == nil || l.Attrs().HardwareAddr.String() != "02:00:00:00:bb:bb" {
		t.Fatalf("B's net1: %v", l)
	}
	// A's late DEL: releases A's address and state, leaves B's VF alone.
	if err := n.del(a); err != nil {
		t.Fatal(err)
	}
	if l := link(t, podB, "net1"); l == nil || l.Attrs().HardwareAddr.String() != "02:00:00:00:bb:bb" || l.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("A's late DEL changed B's VF: %v", l)
	}
	if got := n.leases(); len(got) != 1 || got[0] != resB.IPs[0].Address.IP.String() {
		t.Errorf("leases after A's DEL %v, want only B's %s", got, resB.IPs[0].Address.IP)
	}
	if _, err := os.Stat(n.p.DevInfo.CNIPath("sriov-net", "ctr-a", "net1")); !os.IsNotExist(err) {
		t.Errorf("A's device-info still there: %v", err)
	}
	// B's DEL puts back what the VF was before A, not what A left.
	if err := n.del(b); err != nil {
		t.Fatal(err)
	}
	n.assertVFHome("mnvf0", podB)
	n.assertClean()
}

func TestCheck(t *testing.T) {
	n := newNode(t)
	pod := n.pod()
	a := n.args("c1", pod, n.conf("0000:00:12.0", "default", `,"mac":"02:00:00:00:77:04"`))
	res, err := n.add(a)
	if err != nil {
		t.Fatal(err)
	}
	withPrev := func(r *current.Result) Args {
		var m map[string]any
		_ = json.Unmarshal(a.StdinData, &m)
		m["prevResult"] = r
		b, _ := json.Marshal(m)
		c := a
		c.StdinData = b
		return c
	}
	if err := n.check(withPrev(res)); err != nil {
		t.Fatalf("CHECK right after ADD: %v", err)
	}
	err = pod.Do(func(ns.NetNS) error {
		mac, _ := net.ParseMAC("02:00:00:00:66:66")
		return netlink.LinkSetHardwareAddr(link(t, pod, "net1"), mac)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.check(withPrev(res)); err == nil || !strings.Contains(err.Error(), "mac 02:00:00:00:66:66, want 02:00:00:00:77:04") {
		t.Fatalf("CHECK after the MAC changed: %v", err)
	}
	if err := n.check(a); err == nil || !strings.Contains(err.Error(), "prevResult") {
		t.Fatalf("CHECK without prevResult: %v", err)
	}
	if err := n.del(a); err != nil {
		t.Fatal(err)
	}
	if err := n.check(withPrev(res)); err == nil || !strings.Contains(err.Error(), "no attachment") {
		t.Fatalf("CHECK after DEL: %v", err)
	}
}

func TestDPDKMode(t *testing.T) {
	n := newNode(t)
	pod := n.pod()
	a := n.args("c1", pod, n.conf(dpdkAddr, "default", ""))
	res, err := n.add(a)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Interfaces) != 1 || res.Interfaces[0].Name != "net1" || res.Interfaces[0].Sandbox != "" || res.Interfaces[0].PciID != dpdkAddr {
		t.Errorf("DPDK result interfaces %+v", res.Interfaces)
	}
	if len(res.IPs) != 1 || len(n.leases()) != 1 {
		t.Errorf("DPDK result ips %+v, leases %v", res.IPs, n.leases())
	}
	if l := link(t, pod, "net1"); l != nil {
		t.Error("DPDK mode created a netdev in the pod")
	}
	di, _ := devinfo.Load(n.p.DevInfo.CNIPath("sriov-net", "c1", "net1"))
	if di == nil || di.Pci.PciAddress != dpdkAddr || di.Pci.PfPciAddress != pfAddr {
		t.Errorf("device-info %+v", di)
	}
	// A second pod asking for the same DPDK VF is refused.
	if _, err := n.add(n.args("c2", n.pod(), n.conf(dpdkAddr, "", ""))); err == nil || !strings.Contains(err.Error(), "in use by container c1") {
		t.Errorf("second ADD of a DPDK VF: %v", err)
	}
	if err := n.del(a); err != nil {
		t.Fatal(err)
	}
	n.assertClean()
}

func TestGCReleasesAttachmentsTheRuntimeForgot(t *testing.T) {
	n := newNode(t)
	keep, drop := n.pod(), n.pod()
	ak := n.args("keep", keep, n.conf("0000:00:12.0", "default", ""))
	ad := n.args("drop", drop, n.conf("0000:00:12.1", "default", ""))
	for _, a := range []Args{ak, ad} {
		if _, err := n.add(a); err != nil {
			t.Fatal(err)
		}
	}
	gc := []byte(`{"cniVersion":"1.1.0","name":"sriov-net","type":"sriov","cni.dev/valid-attachments":[{"containerID":"keep","ifname":"net1"}]}`)
	if err := n.host.Do(func(ns.NetNS) error { return n.p.GC(Args{Path: cniBinDir, StdinData: gc}) }); err != nil {
		t.Fatal(err)
	}
	n.assertVFHome("mnvf1", drop)
	if link(t, keep, "net1") == nil {
		t.Fatal("GC released a valid attachment")
	}
	if len(n.leases()) != 1 {
		t.Errorf("leases after GC: %v", n.leases())
	}
	if err := n.del(ak); err != nil {
		t.Fatal(err)
	}
	n.assertClean()
}

func TestStatus(t *testing.T) {
	p := &Plugin{StateDir: filepath.Join(t.TempDir(), "sriov")}
	if err := p.Status(Args{StdinData: []byte(`{"cniVersion":"1.1.0","name":"n","type":"sriov"}`)}); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "file")
	_ = os.WriteFile(f, nil, 0o600)
	p.StateDir = filepath.Join(f, "sriov")
	if err := p.Status(Args{StdinData: []byte(`{"name":"n"}`)}); err == nil {
		t.Fatal("STATUS with an unusable state dir succeeded")
	}
	if err := p.Status(Args{StdinData: []byte(`{`)}); err == nil || errors.Is(err, os.ErrNotExist) {
		t.Fatalf("STATUS with a broken netconf: %v", err)
	}
}

// BenchmarkAddDelNetdev: one ADD and one DEL of a netdev-mode VF on the simulated node, without
// IPAM (an exec of its own): the plugin's own cost (state, locks, netns moves).
func BenchmarkAddDelNetdev(b *testing.B) {
	n := newNode(b)
	n.p.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	pod, err := testutils.NewNS()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { pod.Close(); testutils.UnmountNS(pod) })
	a := Args{ContainerID: "bench", Netns: pod.Path(), IfName: "net1",
		StdinData: n.conf("0000:00:12.0", "", `,"mac":"02:00:00:00:77:09"`)}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := n.add(a); err != nil {
			b.Fatal(err)
		}
		if err := n.del(a); err != nil {
			b.Fatal(err)
		}
	}
}

func TestTakeoverWaitsForTheNetdevToComeBack(t *testing.T) {
	n := newNode(t)
	podA, podB := n.pod(), n.pod()
	if _, err := n.add(n.args("ctr-a", podA, n.conf("0000:00:12.0", "", ""))); err != nil {
		t.Fatal(err)
	}
	n.podDies(podA, "0000:00:12.0")
	// As on a host right after the netns went: the kernel has not handed the netdev back yet.
	n.tree.RemoveNetdev("0000:00:12.0", "net1")
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(300 * time.Millisecond)
		n.tree.SetNetdevs("0000:00:12.0", "net1")
	}()
	_, err := n.add(n.args("ctr-b", podB, n.conf("0000:00:12.0", "", "")))
	<-done
	if err != nil {
		t.Fatalf("B's ADD while the netdev was on its way back: %v", err)
	}
	if link(t, podB, "net1") == nil {
		t.Fatal("B has no net1")
	}
}

// On a switchdev PF the device-info names the VF's representor (representor-device), as
// upstream sriov-cni writes it for OVS hardware offload.
func TestDevInfoNamesTheRepresentor(t *testing.T) {
	n := newNode(t)
	n.tree.AddRepresentor(pfAddr, "mnpf0", "p0", "0011223344556677")
	n.tree.AddRepresentor(pfAddr, "mnvf1rep", "pf0vf1", "0011223344556677")
	a := n.args("c1", n.pod(), n.conf("0000:00:12.1", "default", ""))
	if _, err := n.add(a); err != nil {
		t.Fatal(err)
	}
	di, err := devinfo.Load(n.p.DevInfo.CNIPath("sriov-net", "c1", "net1"))
	if err != nil || di == nil || di.Pci.RepresentorDevice != "mnvf1rep" {
		t.Errorf("device-info %+v, %v; want representor-device mnvf1rep", di, err)
	}
	if err := n.del(a); err != nil {
		t.Fatal(err)
	}
}

// A process that keeps a netlink handle on the host's namespace (the agent) reads and sets VF
// settings through it, also from a thread that is in a pod's namespace at the time: the PF is
// found in the host, not looked for in the pod. A full ADD and DEL run over the kept handle.
func TestKeptNetlinkHandleIsTheHosts(t *testing.T) {
	n := newNode(t)
	var h *netlink.Handle
	err := n.host.Do(func(ns.NetNS) error {
		var err error
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	n.p.NL = h
	pod := n.pod()
	err = pod.Do(func(ns.NetNS) error {
		m, done, err := n.p.newManager()
		if err != nil {
			return err
		}
		defer done()
		if _, err := m.NL.LinkByName("mnpf0"); err != nil {
			return fmt.Errorf("the PF through the kept handle, from the pod's namespace: %w", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	a := n.args("c1", pod, n.conf("0000:00:12.0", "default", ""))
	if _, err := n.add(a); err != nil {
		t.Fatal(err)
	}
	if err := n.del(a); err != nil {
		t.Fatal(err)
	}
	if _, err := h.LinkByName("mnpf0"); err != nil {
		t.Errorf("the kept handle after ADD and DEL: %v", err)
	}
}
