//go:build e2e_vm

package guest

import (
	"net"
	"os"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/multinet-io/multinet/vfmanager"
)

// vfInfo reads the VF's entry straight from the PF through netlink, independent of vfmanager.
func vfInfo(t *testing.T, pfNetdev string, vf int) netlink.VfInfo {
	t.Helper()
	// A handle of our own: the package-level calls do not ask the kernel for the VF list.
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName(pfNetdev)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range l.Attrs().Vfs {
		if v.ID == vf {
			return v
		}
	}
	t.Fatalf("pf %s reports no vf %d", pfNetdev, vf)
	return netlink.VfInfo{}
}

func TestVFSettingsThroughPF(t *testing.T) {
	inGuest(t)
	m, _ := withVFs(t, pf1, 2)
	pfnd := pfNetdev(t, pf1)
	saved, err := m.ReadVF(pfnd, 1)
	if err != nil {
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC("02:00:00:aa:bb:01")
	vlan, qos, off, on := 100, 3, false, true
	if err := m.ApplyVF(pfnd, 1, vfmanager.VFConfig{MAC: mac, VLAN: &vlan, QoS: &qos, SpoofChk: &off, Trust: &on}); err != nil {
		t.Fatal(err)
	}
	got := vfInfo(t, pfnd, 1)
	if got.Mac.String() != mac.String() || got.Vlan != 100 || got.Qos != 3 || got.Spoofchk || got.Trust == 0 {
		t.Errorf("netlink reads back mac %s vlan %d qos %d spoofchk %v trust %d", got.Mac, got.Vlan, got.Qos, got.Spoofchk, got.Trust)
	}
	if other := vfInfo(t, pfnd, 0); other.Vlan != 0 || other.Mac.String() == mac.String() {
		t.Errorf("VF 0 changed too: vlan %d mac %s", other.Vlan, other.Mac)
	}

	// igb has no per-VF link state control: the error must say which PF, VF and setting.
	err = m.ApplyVF(pfnd, 1, vfmanager.VFConfig{LinkState: "enable"})
	if err == nil {
		t.Fatal("igb accepted link state; expected EOPNOTSUPP")
	}
	for _, want := range []string{"pf " + pfnd, "vf 1", "link state enable", "not supported"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("link state error %q lacks %q", err, want)
		}
	}
	t.Logf("igb link state refusal: %v", err)

	if err := m.RestoreVF(pfnd, 1, saved); err != nil {
		t.Fatal(err)
	}
	back := vfInfo(t, pfnd, 1)
	if back.Mac.String() != saved.MAC || back.Vlan != saved.VLAN || back.Qos != saved.QoS || back.Spoofchk != saved.SpoofChk || (back.Trust != 0) != saved.Trust {
		t.Errorf("after restore: mac %s vlan %d qos %d spoofchk %v trust %d; saved %+v", back.Mac, back.Vlan, back.Qos, back.Spoofchk, back.Trust, saved)
	}
}

func TestMoveVFNetdevIntoNetnsAndBack(t *testing.T) {
	inGuest(t)
	m, vfs := withVFs(t, pf1, 1)
	nds, err := m.Sys.Netdevs(vfs[0])
	if err != nil || len(nds) == 0 {
		t.Fatalf("VF %s has no netdev: %v", vfs[0], err)
	}
	name := nds[0]
	pod, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	defer testutils.UnmountNS(pod)
	defer pod.Close()
	link, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetNsFd(link, int(pod.Fd())); err != nil {
		t.Fatalf("move %s into netns: %v", name, err)
	}
	if _, err := netlink.LinkByName(name); err == nil {
		t.Errorf("%s still visible in the host namespace", name)
	}
	host, err := ns.GetCurrentNS()
	if err != nil {
		t.Fatal(err)
	}
	err = pod.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetName(l, "net1"); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		l, _ = netlink.LinkByName("net1")
		if err := netlink.LinkSetDown(l); err != nil {
			return err
		}
		if err := netlink.LinkSetName(l, name); err != nil {
			return err
		}
		return netlink.LinkSetNsFd(l, int(host.Fd()))
	})
	if err != nil {
		t.Fatalf("in pod netns: %v", err)
	}
	if _, err := netlink.LinkByName(name); err != nil {
		t.Errorf("%s not back in the host namespace: %v", name, err)
	}
	if got, _ := m.Sys.Netdevs(vfs[0]); len(got) == 0 || got[0] != name {
		t.Errorf("sysfs lists %v for the VF after the round trip, want %s", got, name)
	}
}

// TestBrokenKernelPath is off by default. MULTINET_E2E_BROKEN=1 make e2e-vm turns it on to show
// how a broken kernel path fails the run: a bind to a driver the guest never loaded.
func TestBrokenKernelPath(t *testing.T) {
	inGuest(t)
	if os.Getenv("MULTINET_E2E_BROKEN") != "1" {
		t.Skip("set MULTINET_E2E_BROKEN=1 to see a broken kernel path fail the run")
	}
	m, vfs := withVFs(t, pf1, 1)
	if err := m.Sys.Bind(vfs[0], "igb_uio"); err != nil {
		t.Fatalf("bind VF to igb_uio: %v", err)
	}
}
