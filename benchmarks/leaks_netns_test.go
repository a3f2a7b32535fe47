package benchmarks

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
)

// What a DEL left, as the harness counts it for every stack: an interface still in the pod's
// netns, a VF netdev not back on the host, a lease and a state file naming the container.
func TestPodLeaksCountsWhatDELLeft(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	podNS, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	defer testutils.UnmountNS(podNS)
	defer podNS.Close()
	hostNS, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	defer testutils.UnmountNS(hostNS)
	defer hostNS.Close()

	state := t.TempDir()
	os.WriteFile(filepath.Join(state, "cbr0-cid-x-eth0"), []byte("{}"), 0o600)
	os.WriteFile(filepath.Join(state, "cbr0-cid-other-eth0"), []byte("{}"), 0o600)
	b := &Bench{node: &Node{VFNetdevs: map[string]string{"0000:3b:02.0": "benchvf0", "0000:3b:02.1": "benchvf1"}}}
	st := &Stack{Name: "multus-thick", stateDirs: []string{state, filepath.Join(state, "absent")}}
	p := &pod{name: "x", ns: podNS, vfs: []string{"0000:3b:02.0", "0000:3b:02.1"}}
	p.rt = &libcni.RuntimeConf{ContainerID: "cid-x"}

	err = hostNS.Do(func(ns.NetNS) error {
		// benchvf0 is home; benchvf1 is not (left in the pod, as net1).
		for _, name := range []string{"benchvf0", "net1"} {
			if err := addVeth(name); err != nil {
				return err
			}
		}
		l, err := netlink.LinkByName("net1")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetNsFd(l, int(podNS.Fd())); err != nil {
			return err
		}
		got := b.podLeaks(p, st, map[string]int{"cid-x": 1, "cid-other": 3})
		if got != (leaks{Leases: 1, Netdevs: 1, VFs: 1, Files: 1}) {
			t.Errorf("leaks %+v, want 1 lease, 1 netdev, 1 VF, 1 file", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
