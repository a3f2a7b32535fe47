package sriovcni

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/multinet-io/multinet/vfmanager"
)

// recordAdmin rewrites the attachment's state as ADD writes it on a PF that reports its VFs
// (the veth standing in for the PF here reports none): the VF's admin settings from before.
func (n *node) recordAdmin(a Args, vf string, st vfmanager.VFState) {
	n.t.Helper()
	s := n.p.store()
	c, err := s.loadCache(a.ContainerID, a.IfName)
	if err != nil || c == nil {
		n.t.Fatalf("cache: %v", err)
	}
	o, err := s.loadOwner(vf)
	if err != nil || o == nil {
		n.t.Fatalf("owner: %v", err)
	}
	c.Original.Admin, o.Original.Admin = &st, &st
	if err := writeJSON(s.cachePath(a.ContainerID, a.IfName), c); err != nil {
		n.t.Fatal(err)
	}
	if err := writeJSON(s.ownerPath(vf), o); err != nil {
		n.t.Fatal(err)
	}
}

// removeVF does what `echo 0 > sriov_numvfs` (or a reboot before the VFs are created again)
// does to a VF: its PCI function and its netdev are gone.
func (n *node) removeVF(vf string, index int, netdev string) {
	n.t.Helper()
	root := n.tree.Root
	target, err := filepath.EvalSymlinks(filepath.Join(root, "bus/pci/devices", vf))
	if err != nil {
		n.t.Fatal(err)
	}
	os.Remove(filepath.Join(root, "bus/pci/devices", vf))
	os.RemoveAll(target)
	os.Remove(filepath.Join(n.tree.DevicePath(pfAddr), fmt.Sprintf("virtfn%d", index)))
	_ = n.host.Do(func(ns.NetNS) error {
		if l, err := netlink.LinkByName(netdev); err == nil {
			return netlink.LinkDel(l)
		}
		return nil
	})
}

// A VF that no longer exists at DEL (VFs removed while the pod ran, or a reboot: kubelet DELs
// the old sandboxes before anything creates the VFs again) has no settings left to restore: DEL
// succeeds and frees the IPAM lease, the device-info and the state, instead of failing forever
// and keeping the pod in Terminating.
func TestDelAfterTheVFWasRemoved(t *testing.T) {
	n := newNode(t)
	pod := n.pod()
	a := n.args("c1", pod, n.conf("0000:00:12.1", "default", ""))
	if _, err := n.add(a); err != nil {
		t.Fatal(err)
	}
	n.recordAdmin(a, "0000:00:12.1", vfmanager.VFState{MAC: "00:00:00:00:00:00", SpoofChk: true, LinkState: "auto"})
	// The pod's netns dies with the node; the VF does not come back.
	pod.Close()
	if err := testutils.UnmountNS(pod); err != nil {
		t.Fatal(err)
	}
	n.removeVF("0000:00:12.1", 1, "mnvf1")

	if err := n.del(a); err != nil {
		t.Fatalf("DEL of an attachment whose VF is gone: %v", err)
	}
	if l := n.leases(); len(l) != 0 {
		t.Errorf("leases after DEL = %v", l)
	}
	if s := n.stateFiles(); len(s) != 0 {
		t.Errorf("state after DEL = %v", s)
	}
	if _, err := os.Stat(n.p.DevInfo.CNIPath("sriov-net", "c1", "net1")); !os.IsNotExist(err) {
		t.Errorf("device-info after DEL: %v", err)
	}
}
