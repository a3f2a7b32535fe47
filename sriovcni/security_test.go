package sriovcni

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/multinet-io/multinet/devpools"
)

// A pod with NET_ADMIN renames its VF. DEL must still find it (by its device, not its name),
// move it back to the host and only then drop the ownership record; before, DEL "succeeded",
// the record went and the VF stayed in the pod for the next pod to be given as free.
func TestSecurityDelFindsARenamedVF(t *testing.T) {
	n := newNode(t)
	pod := n.pod()
	a := n.args("c1", pod, n.conf("0000:00:12.1", "default", ""))
	if _, err := n.add(a); err != nil {
		t.Fatal(err)
	}
	err := pod.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("net1")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetDown(l); err != nil {
			return err
		}
		return netlink.LinkSetName(l, "hidden0")
	})
	if err != nil {
		t.Fatal(err)
	}
	// The pod also makes a decoy veth pair called net1 and under the temporary name.
	err = pod.Do(func(ns.NetNS) error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "net1"}, PeerName: tmpName("0000:00:12.1")})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.del(a); err != nil {
		t.Fatal(err)
	}
	if link(t, pod, "hidden0") != nil {
		t.Fatal("the renamed VF is still in the pod after DEL")
	}
	if link(t, n.host, "mnvf1") == nil {
		t.Fatal("mnvf1 is not back in the host")
	}
	if link(t, pod, "net1") == nil {
		t.Error("DEL took the pod's own decoy net1")
	}
	if f := n.stateFiles(); len(f) != 0 {
		t.Errorf("state left behind: %v", f)
	}
}

// An ADD fails after the VF moved into the pod, and its undo fails too (here: the host has
// links under the VF's name and its temporary name by then, so the move back is refused). The cache and the
// ownership record must stay: before, both were deleted, DEL did nothing and the VF stayed in
// the pod while the next pod's ADD took it as free.
func TestSecurityFailedUndoKeepsTheRecordForDel(t *testing.T) {
	n := newNode(t)
	pod := n.pod()
	const vf = "0000:00:12.0"
	// An IPAM plugin that plants the collision and fails, after the VF is in the pod.
	bin := t.TempDir()
	script := "#!/bin/sh\n[ \"$CNI_COMMAND\" = ADD ] || exit 0\nip link add " + tmpName(vf) + " type veth peer name mncollp >/dev/null 2>&1\n" +
		"ip link add mnvf0 type veth peer name mncollq >/dev/null 2>&1\n" +
		`echo '{"cniVersion":"1.0.0","code":11,"msg":"planted failure"}'` + "\nexit 1\n"
	if err := os.WriteFile(filepath.Join(bin, "failing-ipam"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	a := n.args("c1", pod, n.conf(vf, `{"type":"failing-ipam"}`, `,"mac":"02:00:00:00:77:06"`))
	a.Path = bin
	_, err := n.add(a)
	if err == nil || !strings.Contains(err.Error(), "undo incomplete") {
		t.Fatalf("ADD err = %v, want the IPAM failure with an incomplete undo", err)
	}
	if !podHasVF(t, pod) {
		t.Fatal("test setup: the undo was expected to leave the VF in the pod")
	}
	if f := n.stateFiles(); len(f) != 2 {
		t.Fatalf("state after the failed undo = %v, want the cache and the ownership record", f)
	}
	// Another pod must not get the VF while it is still in the first one.
	other := n.pod()
	if _, err := n.add(n.args("c2", other, n.conf(vf, "", ""))); err == nil || !strings.Contains(err.Error(), "in use by container c1") {
		t.Fatalf("ADD of the half-released VF by another pod: %v", err)
	}
	// The collisions go; the runtime's DEL of the failed ADD finishes the undo.
	_ = n.host.Do(func(ns.NetNS) error {
		for _, name := range []string{tmpName(vf), "mnvf0"} {
			if l, err := netlink.LinkByName(name); err == nil {
				netlink.LinkDel(l)
			}
		}
		return nil
	})
	if err := n.del(a); err != nil {
		t.Fatal(err)
	}
	n.assertVFHome("mnvf0", pod)
	n.assertClean()
}

// podHasVF says whether the pod holds a VF netdev under one of the plugin's fallback names.
func podHasVF(t *testing.T, pod ns.NetNS) bool {
	t.Helper()
	found := false
	_ = pod.Do(func(ns.NetNS) error {
		links, _ := netlink.LinkList()
		for _, l := range links {
			found = found || strings.HasPrefix(l.Attrs().Name, "mnvr")
		}
		return nil
	})
	return found
}

// problems returns the records left for doctor.
func (n *node) problems() []Problem {
	n.t.Helper()
	var out []Problem
	es, _ := os.ReadDir(n.p.store().problemDir())
	for _, e := range es {
		var p Problem
		if ok, err := readJSON(filepath.Join(n.p.store().problemDir(), e.Name()), &p); !ok || err != nil {
			n.t.Fatalf("problem record %s: %v", e.Name(), err)
		}
		out = append(out, p)
	}
	return out
}

func (n *node) quarantined() []string {
	es, _ := os.ReadDir(filepath.Join(n.p.StateDir, "quarantine"))
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func corrupt(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(`{"containerID": "c1", truncated`), 0o600); err != nil {
		t.Fatal(err)
	}
}

// A corrupt attachment cache failed DEL forever (the pod stays Terminating, the VF in it). DEL
// now quarantines the cache, works from the VF's ownership record (found through the deviceID of
// DEL's netconf), puts the VF back, releases the lease and records the problem for doctor.
func TestSecurityDelWithACorruptCache(t *testing.T) {
	n := newNode(t)
	pod := n.pod()
	a := n.args("c1", pod, n.conf("0000:00:12.1", "default", `,"mac":"02:00:00:00:77:08"`))
	if _, err := n.add(a); err != nil {
		t.Fatal(err)
	}
	corrupt(t, n.p.store().cachePath("c1", "net1"))
	if err := n.del(a); err != nil {
		t.Fatalf("DEL with a corrupt cache: %v", err)
	}
	n.assertVFHome("mnvf1", pod)
	n.assertClean()
	if q := n.quarantined(); len(q) != 1 || !strings.HasPrefix(q[0], "c1-net1.json.") {
		t.Errorf("quarantine = %v, want the cache", q)
	}
	if ps := n.problems(); len(ps) != 1 || ps[0].VF != "0000:00:12.1" || ps[0].ContainerID != "c1" || !strings.Contains(ps[0].Reason, "corrupt") || ps[0].Quarantined == "" {
		t.Errorf("problems = %+v", ps)
	}
}

// A corrupt ownership record failed DEL and blocked every later ADD of the VF.
func TestSecurityCorruptOwnerRecord(t *testing.T) {
	n := newNode(t)
	const vf = "0000:00:12.2"
	owner := n.p.store().ownerPath(vf)
	pod := n.pod()
	a := n.args("c1", pod, n.conf(vf, "default", ""))
	if _, err := n.add(a); err != nil {
		t.Fatal(err)
	}
	// While c1 holds the VF, its corrupt record must not make the VF look free.
	corrupt(t, owner)
	if _, err := n.add(n.args("c2", n.pod(), n.conf(vf, "", ""))); err == nil || !strings.Contains(err.Error(), "in use by container c1") {
		t.Fatalf("ADD of a held VF with a corrupt record: %v", err)
	}
	corrupt(t, owner)
	if err := n.del(a); err != nil {
		t.Fatalf("DEL with a corrupt ownership record: %v", err)
	}
	n.assertVFHome("mnvf2", pod)
	n.assertClean()
	// A corrupt record of a free VF no longer blocks it.
	corrupt(t, owner)
	b := n.args("c3", n.pod(), n.conf(vf, "", ""))
	if _, err := n.add(b); err != nil {
		t.Fatalf("ADD of a free VF with a corrupt record: %v", err)
	}
	if err := n.del(b); err != nil {
		t.Fatal(err)
	}
	if q := n.quarantined(); len(q) != 3 {
		t.Errorf("quarantine = %v, want the three corrupt records", q)
	}
	if ps := n.problems(); len(ps) != 3 {
		t.Errorf("problems = %+v", ps)
	}
}

// One corrupt cache failed GC for every attachment of the node.
func TestSecurityGCSkipsACorruptCache(t *testing.T) {
	n := newNode(t)
	p1, p2 := n.pod(), n.pod()
	a1 := n.args("c1", p1, n.conf("0000:00:12.0", "", ""))
	a2 := n.args("c2", p2, n.conf("0000:00:12.1", "", ""))
	for _, a := range []Args{a1, a2} {
		if _, err := n.add(a); err != nil {
			t.Fatal(err)
		}
	}
	corrupt(t, n.p.store().cachePath("c1", "net1"))
	gc := []byte(`{"cniVersion":"1.1.0","name":"sriov-net","type":"sriov","cni.dev/valid-attachments":[]}`)
	if err := n.host.Do(func(ns.NetNS) error { return n.p.GC(Args{Path: cniBinDir, StdinData: gc}) }); err != nil {
		t.Fatalf("GC: %v", err)
	}
	n.assertVFHome("mnvf1", p2)
	if q := n.quarantined(); len(q) != 1 {
		t.Errorf("quarantine = %v", q)
	}
	// The runtime's DEL of c1 still finds the VF through its ownership record.
	if err := n.del(a1); err != nil {
		t.Fatal(err)
	}
	n.assertVFHome("mnvf0", p1)
	n.assertClean()
}

// The sriov plugin took any VF whose netdev was in the host namespace: also one the device
// plugin does not advertise (kept for the host by the operator's selectors).
func TestSecurityVFInNoDevicePluginPool(t *testing.T) {
	n := newNode(t)
	n.p.PoolsFile = filepath.Join(t.TempDir(), "pools.json")
	// No pools file (no device plugin on the node): auto allows, as upstream.
	a := n.args("c0", n.pod(), n.conf("0000:00:12.1", "", ""))
	if _, err := n.add(a); err != nil {
		t.Fatalf("ADD without a pools file in auto mode: %v", err)
	}
	if err := n.del(a); err != nil {
		t.Fatal(err)
	}
	n.p.PoolCheck = PoolCheckRequire
	if _, err := n.add(n.args("c0", n.pod(), n.conf("0000:00:12.1", "", ""))); err == nil || !strings.Contains(err.Error(), "device-plugin pool") {
		t.Fatalf("ADD without a pools file in require mode: %v", err)
	}
	n.p.PoolCheck = ""
	if err := devpools.Write(n.p.PoolsFile, map[string][]string{"intel.com/vf": {"0000:00:12.0"}}); err != nil {
		t.Fatal(err)
	}
	for _, vf := range []string{"0000:00:12.1", dpdkAddr} {
		_, err := n.add(n.args("c1", n.pod(), n.conf(vf, "", "")))
		if err == nil || !strings.Contains(err.Error(), "vf "+vf+": in no device-plugin pool") {
			t.Errorf("ADD of %s, in no pool: %v", vf, err)
		}
	}
	if link(t, n.host, "mnvf1") == nil {
		t.Error("the refused ADD moved mnvf1")
	}
	if f := n.stateFiles(); len(f) != 0 {
		t.Errorf("state after refused ADDs: %v", f)
	}
	pod := n.pod()
	b := n.args("c2", pod, n.conf("0000:00:12.0", "", ""))
	if _, err := n.add(b); err != nil {
		t.Fatalf("ADD of a pool member: %v", err)
	}
	if err := n.del(b); err != nil {
		t.Fatal(err)
	}
	n.p.PoolCheck = PoolCheckOff
	c := n.args("c3", n.pod(), n.conf("0000:00:12.1", "", ""))
	if _, err := n.add(c); err != nil {
		t.Fatalf("ADD with the check off: %v", err)
	}
	if err := n.del(c); err != nil {
		t.Fatal(err)
	}
}

// A VF whose netdev the host uses (up with addresses, enslaved to a bond or bridge, carrying
// a route) is the host's: handing it to a pod cut the host off.
func TestSecurityVFTheHostUses(t *testing.T) {
	n := newNode(t)
	err := n.host.Do(func(ns.NetNS) error {
		l0, _ := netlink.LinkByName("mnvf0")
		if err := netlink.LinkSetUp(l0); err != nil {
			return err
		}
		ad, _ := netlink.ParseAddr("192.0.2.10/24")
		if err := netlink.AddrAdd(l0, ad); err != nil {
			return err
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "mnbr0"}}
		if err := netlink.LinkAdd(br); err != nil {
			return err
		}
		l1, _ := netlink.LinkByName("mnvf1")
		if err := netlink.LinkSetMaster(l1, br); err != nil {
			return err
		}
		l2, _ := netlink.LinkByName("mnvf2")
		if err := netlink.LinkSetUp(l2); err != nil {
			return err
		}
		_, dst, _ := net.ParseCIDR("198.51.100.0/24")
		return netlink.RouteAdd(&netlink.Route{LinkIndex: l2.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_LINK})
	})
	if err != nil {
		t.Fatal(err)
	}
	for vf, want := range map[string]string{
		"0000:00:12.0": "up with address 192.0.2.10/24",
		"0000:00:12.1": "enslaved to mnbr0",
		"0000:00:12.2": "carries the route 198.51.100.0/24",
	} {
		_, err := n.add(n.args("c-"+vf, n.pod(), n.conf(vf, "", "")))
		if err == nil || !strings.Contains(err.Error(), "the host uses its netdev") || !strings.Contains(err.Error(), want) {
			t.Errorf("ADD of %s: %v, want a refusal saying %q", vf, err, want)
		}
	}
	for _, name := range []string{"mnvf0", "mnvf1", "mnvf2"} {
		if link(t, n.host, name) == nil {
			t.Errorf("a refused ADD moved %s", name)
		}
	}
	if f := n.stateFiles(); len(f) != 0 {
		t.Errorf("state after refused ADDs: %v", f)
	}
	// Once the host lets go (address removed), the VF is free.
	_ = n.host.Do(func(ns.NetNS) error {
		l0, _ := netlink.LinkByName("mnvf0")
		return netlink.LinkSetDown(l0)
	})
	a := n.args("c1", n.pod(), n.conf("0000:00:12.0", "", ""))
	if _, err := n.add(a); err != nil {
		t.Fatalf("ADD of a VF the host no longer uses: %v", err)
	}
	if err := n.del(a); err != nil {
		t.Fatal(err)
	}
}

// A VF kubelet gave another pod (a DPDK pod's vfio VF, which has no ownership record of ours
// when that pod has no sriov attachment) must not be configured for this one; one held by
// another attachment is refused in DPDK mode as in netdev mode.
func TestSecurityVFOfAnotherPod(t *testing.T) {
	n := newNode(t)
	n.p.Checkpoint = filepath.Join(t.TempDir(), "kubelet_internal_checkpoint")
	cp := `{"Data":{"PodDeviceEntries":[{"PodUID":"uid-dpdk-pod","ContainerName":"c","ResourceName":"intel.com/dpdk","DeviceIDs":{"-1":["` + dpdkAddr + `"]}}],"RegisteredDevices":{}},"Checksum":1}`
	if err := os.WriteFile(n.p.Checkpoint, []byte(cp), 0o600); err != nil {
		t.Fatal(err)
	}
	a := n.args("c1", n.pod(), n.conf(dpdkAddr, "", `,"vlan":100`))
	a.Args = "IgnoreUnknown=1;K8S_POD_UID=uid-tenant"
	if _, err := n.add(a); err == nil || !strings.Contains(err.Error(), "kubelet allocated it to pod uid-dpdk-pod, not to this pod uid-tenant") {
		t.Fatalf("ADD of another pod's DPDK VF: %v", err)
	}
	if f := n.stateFiles(); len(f) != 0 {
		t.Errorf("state after the refused ADD: %v", f)
	}
	own := n.args("c2", n.pod(), n.conf(dpdkAddr, "", ""))
	own.Args = "K8S_POD_UID=uid-dpdk-pod"
	if _, err := n.add(own); err != nil {
		t.Fatalf("ADD by the pod kubelet gave the VF to: %v", err)
	}
	// While c2 holds it, nobody else gets it, whatever kubelet's checkpoint says.
	other := n.args("c3", n.pod(), n.conf(dpdkAddr, "", ""))
	other.Args = "K8S_POD_UID=uid-dpdk-pod"
	if _, err := n.add(other); err == nil || !strings.Contains(err.Error(), "in use by container c2") {
		t.Fatalf("second ADD of a held DPDK VF: %v", err)
	}
	if err := n.del(own); err != nil {
		t.Fatal(err)
	}
	n.assertClean()
}

// A corrupt cache of an attachment whose VF now belongs to another container: DEL succeeds
// and leaves the holder's VF alone.
func TestSecurityCorruptCacheOfAnotherHoldersVF(t *testing.T) {
	n := newNode(t)
	const vf = "0000:00:12.0"
	holder := n.pod()
	a2 := n.args("c2", holder, n.conf(vf, "", ""))
	if _, err := n.add(a2); err != nil {
		t.Fatal(err)
	}
	path := n.p.store().cachePath("c1", "net1")
	corrupt(t, path)
	if err := n.del(n.args("c1", n.pod(), n.conf(vf, "", ""))); err != nil {
		t.Fatalf("DEL with a corrupt cache: %v", err)
	}
	if link(t, holder, "net1") == nil {
		t.Fatal("DEL of c1 took c2's VF")
	}
	if o, err := n.p.store().loadOwner(vf); err != nil || o == nil || o.ContainerID != "c2" {
		t.Fatalf("owner after c1's DEL: %+v, %v", o, err)
	}
	if ps := n.problems(); len(ps) != 1 || !strings.Contains(ps[0].Left, "belongs to container c2") {
		t.Errorf("problems = %+v", ps)
	}
	if err := n.del(a2); err != nil {
		t.Fatal(err)
	}
	n.assertVFHome("mnvf0", holder)
}
