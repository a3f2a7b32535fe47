package vfmanager_test

import (
	"errors"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/pci/pcitest"
	"github.com/multinet-io/multinet/vfmanager"
)

// hostNS gives a fresh network namespace and a netlink handle in it, standing in for the
// host's namespace so tests never touch the machine's own links.
func hostNS(t *testing.T) (ns.NetNS, *netlink.Handle) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and veth links")
	}
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(); testutils.UnmountNS(n) })
	h, err := netlink.NewHandleAt(netns.NsHandle(n.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return n, h
}

func addVeth(t *testing.T, h *netlink.Handle, name, peer string) netlink.Link {
	t.Helper()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer}); err != nil {
		t.Fatalf("add veth %s: %v", name, err)
	}
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestPolicyMTUOnRealLink(t *testing.T) {
	_, h := hostNS(t)
	addVeth(t, h, "mnpf0", "mnpf0p")
	tree := pcitest.New(t)
	tree.AddPF(pcitest.PF{Address: "0000:00:02.0", Vendor: "8086", Device: "10c9", Driver: "igb", Netdev: "mnpf0", TotalVFs: 7})
	m := &vfmanager.Manager{Sys: pci.New(tree.Root), NL: h}
	p := mustParse(t, "pfs:\n- pf: mnpf0\n  numVfs: 0\n  mtu: 9000\n")

	changes, err := m.Apply(p, vfmanager.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 1 || changes[0].String() != "pf 0000:00:02.0 (mnpf0): mtu 1500 -> 9000" {
		t.Fatalf("changes = %v", changes)
	}
	l, _ := h.LinkByName("mnpf0")
	if l.Attrs().MTU != 9000 {
		t.Fatalf("kernel reports mtu %d", l.Attrs().MTU)
	}
	if again, err := m.Apply(p, vfmanager.ApplyOptions{}); err != nil || len(again) != 0 {
		t.Fatalf("second apply = %v, %v", again, err)
	}
}

func TestVFSettingsOnANetdevWithoutVFs(t *testing.T) {
	_, h := hostNS(t)
	addVeth(t, h, "mnpf1", "mnpf1p")
	m := &vfmanager.Manager{NL: h}
	vlan := 10
	err := m.ApplyVF("mnpf1", 0, vfmanager.VFConfig{VLAN: &vlan})
	if err == nil || !strings.Contains(err.Error(), "pf mnpf1: has no vf 0") {
		t.Fatalf("err = %v", err)
	}
	if _, err := m.ReadVF("mnpf9", 0); err == nil || !strings.Contains(err.Error(), "pf mnpf9") {
		t.Fatalf("missing PF err = %v", err)
	}
}

func TestVFConfigValidation(t *testing.T) {
	i := func(v int) *int { return &v }
	cases := map[string]vfmanager.VFConfig{
		"vlan 4095 out of range": {VLAN: i(4095)},
		"qos 8 out of range":     {VLAN: i(1), QoS: i(8)},
		"qos without vlan":       {QoS: i(3)},
		"proto 802.1x":           {VLAN: i(5), VLANProto: "802.1x"},
		"link state up":          {LinkState: "up"},
		"min above max":          {MinTxRate: i(200), MaxTxRate: i(100)},
		"negative max_tx_rate":   {MaxTxRate: i(-1)},
	}
	for name, c := range cases {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := (vfmanager.VFConfig{VLAN: i(4094), QoS: i(7), VLANProto: "802.1ad", LinkState: "auto"}).Validate(); err != nil {
		t.Errorf("valid config refused: %v", err)
	}
}

func TestVFNotReportedIsDistinguishable(t *testing.T) {
	_, h := hostNS(t)
	addVeth(t, h, "mnpf2", "mnpf2p")
	m := &vfmanager.Manager{NL: h}
	if _, err := m.ReadVF("mnpf2", 3); !errors.Is(err, vfmanager.ErrVFNotReported) {
		t.Fatalf("veth PF: err = %v, want ErrVFNotReported", err)
	}
	if _, err := m.ReadVF("mnpf-none", 0); err == nil || errors.Is(err, vfmanager.ErrVFNotReported) {
		t.Fatalf("missing PF: err = %v, want a plain lookup error", err)
	}
}

func TestVFConfigMismatches(t *testing.T) {
	i := func(v int) *int { return &v }
	b := func(v bool) *bool { return &v }
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	st := vfmanager.VFState{MAC: "02:00:00:00:00:01", VLAN: 100, QoS: 3, VLANProto: "802.1q", SpoofChk: true, Trust: false, LinkState: "auto", MaxTxRate: 0}
	same := vfmanager.VFConfig{MAC: mac, VLAN: i(100), QoS: i(3), VLANProto: "802.1q", SpoofChk: b(true), Trust: b(false), LinkState: "auto"}
	if m := same.Mismatches(st); len(m) != 0 {
		t.Fatalf("matching config reports %v", m)
	}
	if m := (vfmanager.VFConfig{}).Mismatches(st); len(m) != 0 {
		t.Fatalf("empty config reports %v", m)
	}
	diff := vfmanager.VFConfig{VLAN: i(200), Trust: b(true), MaxTxRate: i(1000), VLANProto: "802.1ad"}
	got := strings.Join(diff.Mismatches(st), "; ")
	for _, want := range []string{"vlan: want 200, have 100", "trust: want on, have off", "max_tx_rate: want 1000, have 0", "vlan proto: want 802.1ad, have 802.1q"} {
		if !strings.Contains(got, want) {
			t.Errorf("mismatches %q lack %q", got, want)
		}
	}
}
