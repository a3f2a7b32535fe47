package sriovcni

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
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

// An ADD fails after the VF moved into the pod, and its undo fails too (here: the host has a
// link under the VF's temporary name by then, so the move back is refused). The cache and the
// ownership record must stay: before, both were deleted, DEL did nothing and the VF stayed in
// the pod while the next pod's ADD took it as free.
func TestSecurityFailedUndoKeepsTheRecordForDel(t *testing.T) {
	n := newNode(t)
	pod := n.pod()
	const vf = "0000:00:12.0"
	// An IPAM plugin that plants the collision and fails, after the VF is in the pod.
	bin := t.TempDir()
	script := "#!/bin/sh\n[ \"$CNI_COMMAND\" = ADD ] || exit 0\nip link add " + tmpName(vf) + " type veth peer name mncollp >/dev/null 2>&1\n" +
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
	if link(t, n.host, "mnvf0") != nil || link(t, pod, tmpName(vf)) == nil {
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
	// The collision goes; the runtime's DEL of the failed ADD finishes the undo.
	_ = n.host.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(tmpName(vf))
		if err != nil {
			return err
		}
		return netlink.LinkDel(l)
	})
	if err := n.del(a); err != nil {
		t.Fatal(err)
	}
	n.assertVFHome("mnvf0", pod)
	n.assertClean()
}
