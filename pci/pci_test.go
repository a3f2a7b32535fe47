package pci_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/pci/pcitest"
)

// node builds a host with one i40e-like PF carrying three VFs (VF 2 on vfio-pci) and one plain NIC.
func node(t *testing.T) *pcitest.Tree {
	tree := pcitest.New(t)
	tree.AddPF(pcitest.PF{Address: "0000:3b:00.0", Vendor: "8086", Device: "1572", Driver: "i40e", Netdev: "ens1f0", TotalVFs: 8, NUMANode: 1})
	for i, a := range []string{"0000:3b:02.0", "0000:3b:02.1", "0000:3b:02.2"} {
		vf := pcitest.VF{PF: "0000:3b:00.0", Index: i, Address: a, Vendor: "8086", Device: "154c", Driver: "iavf", Netdev: "ens1f0v" + string(rune('0'+i))}
		if i == 2 {
			vf.Driver, vf.DefaultDriver = "vfio-pci", "iavf"
		}
		tree.AddVF(vf)
	}
	tree.AddNIC(pcitest.NIC{Address: "0000:00:03.0", Vendor: "1af4", Device: "1000", Driver: "virtio-pci", Netdev: "eth0", NUMANode: -1, IOMMUGroup: -1})
	return tree
}

func TestNetDevicesReadsPFsAndVFs(t *testing.T) {
	tree := node(t)
	devs, err := pci.New(tree.Root).NetDevices()
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, d := range devs {
		addrs = append(addrs, d.Address)
	}
	want := []string{"0000:00:03.0", "0000:3b:00.0", "0000:3b:02.0", "0000:3b:02.1", "0000:3b:02.2"}
	if !reflect.DeepEqual(addrs, want) {
		t.Fatalf("addresses = %v, want %v", addrs, want)
	}
	pf := devs[1]
	if pf.Driver != "i40e" || pf.Netdev != "ens1f0" || pf.TotalVFs != 8 || pf.NumVFs != 3 || pf.VFIndex != -1 || pf.PFAddress != "" {
		t.Errorf("PF = %+v", pf)
	}
	if !reflect.DeepEqual(pf.VFs, want[2:]) {
		t.Errorf("PF VFs = %v, want %v", pf.VFs, want[2:])
	}
	if pf.NUMANode != 1 || pf.IOMMUGroup < 0 || pf.LinkType != "ether" || pf.Vendor != "8086" || pf.DeviceID != "1572" {
		t.Errorf("PF attributes = %+v", pf)
	}
	vf1 := devs[3]
	if vf1.PFAddress != "0000:3b:00.0" || vf1.VFIndex != 1 || vf1.Driver != "iavf" || vf1.Netdev != "ens1f0v1" || vf1.NUMANode != 1 {
		t.Errorf("VF 1 = %+v", vf1)
	}
	vfio := devs[4]
	if vfio.Driver != "vfio-pci" || vfio.Netdev != "" || vfio.VFIndex != 2 {
		t.Errorf("vfio VF = %+v", vfio)
	}
	if vf1.IOMMUGroup == vfio.IOMMUGroup {
		t.Errorf("VFs share IOMMU group %d", vf1.IOMMUGroup)
	}
	nic := devs[0]
	if nic.IOMMUGroup != -1 || nic.NUMANode != -1 || nic.TotalVFs != 0 || nic.VFIndex != -1 {
		t.Errorf("plain NIC = %+v", nic)
	}
}

func TestPFOfAndVFAddress(t *testing.T) {
	s := pci.New(node(t).Root)
	pf, idx, err := s.PFOf("0000:3b:02.1")
	if err != nil || pf != "0000:3b:00.0" || idx != 1 {
		t.Fatalf("PFOf = %s, %d, %v", pf, idx, err)
	}
	if _, _, err := s.PFOf("0000:3b:00.0"); err == nil || !strings.Contains(err.Error(), "not an SR-IOV VF") {
		t.Errorf("PFOf(PF) err = %v", err)
	}
	a, err := s.VFAddress("0000:3b:00.0", 2)
	if err != nil || a != "0000:3b:02.2" {
		t.Errorf("VFAddress = %s, %v", a, err)
	}
	if _, err := s.VFAddress("0000:3b:00.0", 5); err == nil || !strings.Contains(err.Error(), "has no VF 5") {
		t.Errorf("VFAddress(5) err = %v", err)
	}
	if !s.IsVF("0000:3b:02.0") || s.IsVF("0000:3b:00.0") {
		t.Error("IsVF wrong")
	}
	if addr, err := s.ByNetdev("ens1f0v1"); err != nil || addr != "0000:3b:02.1" {
		t.Errorf("ByNetdev = %s, %v", addr, err)
	}
}

func TestDeviceErrorsNameTheAddress(t *testing.T) {
	s := pci.New(node(t).Root)
	_, err := s.Device("0000:99:00.0")
	if !errors.Is(err, pci.ErrNoDevice) || !strings.Contains(err.Error(), "0000:99:00.0") {
		t.Errorf("missing device err = %v", err)
	}
	if _, err := s.Device("eth0"); err == nil || !strings.Contains(err.Error(), "not a PCI address") {
		t.Errorf("bad address err = %v", err)
	}
}

func TestVFIODevicePath(t *testing.T) {
	tree := node(t)
	s := pci.New(tree.Root)
	d, _ := s.Device("0000:3b:02.2")
	p, err := s.VFIODevicePath("0000:3b:02.2")
	if err != nil || p != "/dev/vfio/"+itoa(d.IOMMUGroup) {
		t.Errorf("VFIODevicePath = %s, %v (group %d)", p, err, d.IOMMUGroup)
	}
	// noiommu groups carry the name vfio-noiommu and a differently named device node.
	if err := os.WriteFile(filepath.Join(tree.Root, "kernel/iommu_groups", itoa(d.IOMMUGroup), "name"), []byte("vfio-noiommu\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if p, _ := s.VFIODevicePath("0000:3b:02.2"); p != "/dev/vfio/noiommu-"+itoa(d.IOMMUGroup) {
		t.Errorf("noiommu path = %s", p)
	}
	if _, err := s.VFIODevicePath("0000:00:03.0"); err == nil || !strings.Contains(err.Error(), "IOMMU is off") {
		t.Errorf("no-IOMMU err = %v", err)
	}
}

func TestFillNamesFromPCIIDs(t *testing.T) {
	if _, err := os.Stat("/usr/share/misc/pci.ids"); err != nil {
		t.Skip("no pci.ids database on this host (Debian package hwdata)")
	}
	devs := []pci.Device{{Vendor: "8086", DeviceID: "10c9"}, {Vendor: "0002", DeviceID: "0001"}}
	pci.FillNames(devs)
	if !strings.Contains(devs[0].VendorName, "Intel") || !strings.Contains(devs[0].DeviceName, "82576") {
		t.Errorf("names = %q / %q", devs[0].VendorName, devs[0].DeviceName)
	}
	if devs[1].VendorName != "" {
		t.Errorf("unknown vendor got name %q", devs[1].VendorName)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// Subfunctions and the PF's own auxiliary devices under an mlx5 PF, as the kernel lays them out.
func TestAuxDevices(t *testing.T) {
	tr := pcitest.New(t)
	tr.AddPF(pcitest.PF{Address: "0000:03:00.0", Vendor: "15b3", Device: "a2d6", Driver: "mlx5_core", Netdev: "p0", TotalVFs: 8})
	tr.AddAux(pcitest.Aux{Parent: "0000:03:00.0", Name: "mlx5_core.eth.0", Driver: "mlx5_core.eth", SFNum: -1})
	tr.AddAux(pcitest.Aux{Parent: "0000:03:00.0", Name: "mlx5_core.sf.2", Driver: "mlx5_core.sf", SFNum: 88, Netdev: "enp3s0f0s88", RDMA: "mlx5_2"})
	s := pci.New(tr.Root)
	got, err := s.AuxDevices("0000:03:00.0")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "mlx5_core.eth.0" || got[0].Type != "eth" || got[0].SFNum != -1 {
		t.Fatalf("aux devices %+v", got)
	}
	sf := got[1]
	if sf.Type != "sf" || sf.Parent != "0000:03:00.0" || sf.Driver != "mlx5_core.sf" || sf.SFNum != 88 ||
		!reflect.DeepEqual(sf.Netdevs, []string{"enp3s0f0s88"}) || !sf.RDMA || s.AuxLinkType(&sf) != "ether" {
		t.Fatalf("subfunction %+v", sf)
	}
	if pci.AuxType("mlx5_core.sf.2") != "sf" || pci.AuxType("firmware_node") != "" {
		t.Fatal("AuxType")
	}
}

// vDPA devices on a VF: one on vhost_vdpa (a char device), one on virtio_vdpa (a netdev).
func TestVdpaDevices(t *testing.T) {
	tr := pcitest.New(t)
	tr.AddPF(pcitest.PF{Address: "0000:65:00.0", Vendor: "15b3", Device: "101d", Driver: "mlx5_core", Netdev: "p0", TotalVFs: 8})
	tr.AddVF(pcitest.VF{PF: "0000:65:00.0", Index: 0, Address: "0000:65:00.2", Vendor: "15b3", Device: "101e", Driver: "mlx5_core", Netdev: "p0v0"})
	tr.AddVF(pcitest.VF{PF: "0000:65:00.0", Index: 1, Address: "0000:65:00.3", Vendor: "15b3", Device: "101e", Driver: "mlx5_core", Netdev: "p0v1"})
	tr.AddVdpa(pcitest.Vdpa{Parent: "0000:65:00.2", Index: 0, Driver: "vhost_vdpa"})
	tr.AddVdpa(pcitest.Vdpa{Parent: "0000:65:00.3", Index: 1, Driver: "virtio_vdpa", Netdev: "eth5"})
	s := pci.New(tr.Root)
	v0, err := s.VdpaDevices("0000:65:00.2")
	if err != nil {
		t.Fatal(err)
	}
	want0 := []pci.VdpaDevice{{Name: "vdpa0", Parent: "0000:65:00.2", Driver: "vhost_vdpa", CharDev: "/dev/vhost-vdpa-0"}}
	if !reflect.DeepEqual(v0, want0) || v0[0].Type() != "vhost" {
		t.Fatalf("vdpa of VF0 %+v", v0)
	}
	v1, _ := s.VdpaDevices("0000:65:00.3")
	if len(v1) != 1 || v1[0].Type() != "virtio" || v1[0].Netdev != "eth5" || v1[0].CharDev != "" {
		t.Fatalf("vdpa of VF1 %+v", v1)
	}
	if none, _ := s.VdpaDevices("0000:65:00.0"); len(none) != 0 {
		t.Fatalf("PF has vdpa devices %+v", none)
	}
}

// A VF's switchdev representor, found by sriovnet through the tree's root: the PF's uplink
// (p0) and VF representors (pf0vfN) sit under the PF's net/ with their phys_port_name.
func TestRepresentor(t *testing.T) {
	tr := pcitest.New(t)
	tr.AddPF(pcitest.PF{Address: "0000:03:00.0", Vendor: "15b3", Device: "101d", Driver: "mlx5_core", Netdev: "p0", TotalVFs: 8})
	for i := 0; i < 3; i++ {
		tr.AddVF(pcitest.VF{PF: "0000:03:00.0", Index: i, Address: "0000:03:00." + strconv.Itoa(2+i), Vendor: "15b3", Device: "101e", Driver: "mlx5_core", Netdev: "p0v" + strconv.Itoa(i)})
	}
	tr.AddPF(pcitest.PF{Address: "0000:05:00.0", Vendor: "8086", Device: "1593", Driver: "ice", Netdev: "legacy0", TotalVFs: 8})
	tr.AddVF(pcitest.VF{PF: "0000:05:00.0", Index: 0, Address: "0000:05:01.0", Vendor: "8086", Device: "1889", Driver: "iavf", Netdev: "legacy0v0"})
	s := pci.New(tr.Root)
	// Legacy mode: no representors.
	if rep, err := s.Representor("0000:03:00.3"); err != nil || rep != "" {
		t.Fatalf("legacy mode: representor %q, %v; want none", rep, err)
	}
	tr.AddRepresentor("0000:03:00.0", "p0", "p0", "b8cef6fffe000001")
	tr.AddRepresentor("0000:03:00.0", "eth1", "pf0vf0", "b8cef6fffe000001")
	tr.AddRepresentor("0000:03:00.0", "eth2", "pf0vf1", "b8cef6fffe000001")
	rep, err := s.Representor("0000:03:00.3") // VF 1
	if err != nil || rep != "eth2" {
		t.Fatalf("representor of VF 1: %q, %v; want eth2", rep, err)
	}
	if rep, err := s.Representor("0000:03:00.4"); err != nil || rep != "" { // VF 2 has none
		t.Fatalf("VF 2: %q, %v; want none", rep, err)
	}
	if rep, err := s.Representor("0000:05:01.0"); err != nil || rep != "" {
		t.Fatalf("a PF without switchdev: %q, %v", rep, err)
	}
	if _, err := s.Representor("0000:03:00.0"); err == nil {
		t.Fatal("a PF is not a VF")
	}
}
