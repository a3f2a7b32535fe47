//go:build e2e_vm

package guest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// TestSecuritySRIOVCNIRenamedVF: on a real igbvf VF, a pod with NET_ADMIN renames its interface
// and makes a decoy called net1; DEL still finds the VF by its PCI device (the kernel's parent
// device of the netdev), puts it and its PF settings back, and leaves the decoy alone.
func TestSecuritySRIOVCNIRenamedVF(t *testing.T) {
	inGuest(t)
	_, vfs := withVFs(t, pf1, 1)
	pfnd, vf := pfNetdev(t, pf1), vfs[0]
	before := vfInfo(t, pfnd, 0)
	host := vfNetdev(t, vf)
	origName, origMAC := host.Attrs().Name, host.Attrs().HardwareAddr.String()
	pod := newPodNS(t)
	e := newCNIEnv(t)
	conf := `{"cniVersion":"1.1.0","name":"sriov-e2e","type":"sriov","deviceID":"` + vf + `","vlan":77,"mac":"02:00:00:aa:bb:07"}`
	if _, err := e.run("ADD", "ren1", pod.Path(), conf); err != nil {
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
		if err := netlink.LinkSetName(l, "hidden0"); err != nil {
			return err
		}
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "net1"}, PeerName: "decoy0"})
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.run("DEL", "ren1", pod.Path(), conf); err != nil {
		t.Fatal(err)
	}
	assertVFHome(t, pfnd, 0, vf, before, origName, origMAC, "after DEL of a renamed VF")
	var hidden, decoy bool
	_ = pod.Do(func(ns.NetNS) error {
		_, err := netlink.LinkByName("hidden0")
		hidden = err == nil
		_, err = netlink.LinkByName("net1")
		decoy = err == nil
		return nil
	})
	if hidden || !decoy {
		t.Errorf("pod after DEL: renamed VF still there %v, decoy net1 still there %v (want false, true)", hidden, decoy)
	}
}

// TestSecuritySRIOVCNICorruptCache: a corrupt attachment cache on a real VF with PF settings:
// DEL quarantines it, rebuilds from the ownership record and restores the VLAN and MAC.
func TestSecuritySRIOVCNICorruptCache(t *testing.T) {
	inGuest(t)
	_, vfs := withVFs(t, pf1, 1)
	pfnd, vf := pfNetdev(t, pf1), vfs[0]
	before := vfInfo(t, pfnd, 0)
	host := vfNetdev(t, vf)
	origName, origMAC := host.Attrs().Name, host.Attrs().HardwareAddr.String()
	pod := newPodNS(t)
	e := newCNIEnv(t)
	conf := `{"cniVersion":"1.1.0","name":"sriov-e2e","type":"sriov","deviceID":"` + vf + `","vlan":88,"mac":"02:00:00:aa:bb:08"}`
	if _, err := e.run("ADD", "cor1", pod.Path(), conf); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(e.stateDir, "sriov", "cache", "cor1-net1.json")
	if err := os.WriteFile(cache, []byte(`{"vf": trunc`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := e.run("DEL", "cor1", pod.Path(), conf); err != nil {
		t.Fatal(err)
	}
	assertVFHome(t, pfnd, 0, vf, before, origName, origMAC, "after DEL with a corrupt cache")
	if q, _ := os.ReadDir(filepath.Join(e.stateDir, "sriov", "quarantine")); len(q) != 1 {
		t.Errorf("quarantine holds %v", q)
	}
}

// TestSecuritySRIOVCNICorruptCacheNoRecord: the cache is corrupt and the ownership record gone:
// nothing says what the VF was like before, but DEL still finds it in the pod by its PCI address
// and brings it back to the host, and records what it could not restore.
func TestSecuritySRIOVCNICorruptCacheNoRecord(t *testing.T) {
	inGuest(t)
	_, vfs := withVFs(t, pf1, 1)
	vf := vfs[0]
	pod := newPodNS(t)
	e := newCNIEnv(t)
	conf := `{"cniVersion":"1.1.0","name":"sriov-e2e","type":"sriov","deviceID":"` + vf + `"}`
	if _, err := e.run("ADD", "cor2", pod.Path(), conf); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(e.stateDir, "sriov")
	if err := os.WriteFile(filepath.Join(state, "cache", "cor2-net1.json"), []byte(`{"vf": trunc`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(state, "vf", vf+".json")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.run("DEL", "cor2", pod.Path(), conf); err != nil {
		t.Fatal(err)
	}
	vfNetdev(t, vf) // fails the test unless the VF netdev is back in the host
	if ps, _ := os.ReadDir(filepath.Join(state, "problems")); len(ps) != 1 {
		t.Errorf("problem records: %v", ps)
	}
}
