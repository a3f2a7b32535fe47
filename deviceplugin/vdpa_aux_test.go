package deviceplugin

import (
	"encoding/json"
	"log/slog"
	"reflect"
	"testing"

	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/pci/pcitest"
)

// vdpaNode: an mlx5 PF with four VFs; VF0 and VF1 carry vDPA devices on vhost_vdpa, VF2 one on
// virtio_vdpa, VF3 none (as upstream's docs/vdpa configMap expects to find them).
func vdpaNode(t *testing.T) *pcitest.Tree {
	tr := pcitest.New(t)
	tr.AddPF(pcitest.PF{Address: "0000:65:00.0", Vendor: "15b3", Device: "101d", Driver: "mlx5_core", Netdev: "p0", TotalVFs: 8})
	for i := 0; i < 4; i++ {
		tr.AddVF(pcitest.VF{PF: "0000:65:00.0", Index: i, Address: "0000:65:00." + string(rune('2'+i)), Vendor: "15b3", Device: "101e", Driver: "mlx5_core", Netdev: "p0v" + string(rune('0'+i))})
	}
	tr.AddVdpa(pcitest.Vdpa{Parent: "0000:65:00.2", Index: 0, Driver: "vhost_vdpa"})
	tr.AddVdpa(pcitest.Vdpa{Parent: "0000:65:00.3", Index: 1, Driver: "vhost_vdpa"})
	tr.AddVdpa(pcitest.Vdpa{Parent: "0000:65:00.4", Index: 2, Driver: "virtio_vdpa", Netdev: "eth9"})
	return tr
}

func noUplinks() ([]string, error) { return nil, nil }

// vdpaType selects VFs by the driver of their vDPA device; a vhost member is allocated with its
// /dev/vhost-vdpa-N and a device-info of type vdpa, as upstream writes it.
func TestVdpaPools(t *testing.T) {
	dinfo := devinfo.Dir(t.TempDir())
	tr := vdpaNode(t)
	cfg := mustParse(t, `{"resourceList":[
	  {"resourceName":"vdpa_vhost","resourcePrefix":"nvidia.com","selectors":[{"vendors":["15b3"],"devices":["101e"],"vdpaType":"vhost"}]},
	  {"resourceName":"vdpa_virtio","resourcePrefix":"nvidia.com","selectors":[{"vendors":["15b3"],"devices":["101e"],"vdpaType":"virtio"}]}]}`)
	d := &Discoverer{Sys: pci.New(tr.Root), DefaultRouteLinks: noUplinks}
	found, err := d.Discover(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(found["nvidia.com/vdpa_vhost"]); !reflect.DeepEqual(got, []string{"0000:65:00.2", "0000:65:00.3"}) {
		t.Errorf("vhost pool %v", got)
	}
	if got := ids(found["nvidia.com/vdpa_virtio"]); !reflect.DeepEqual(got, []string{"0000:65:00.4"}) {
		t.Errorf("virtio pool %v", got)
	}
	p := newPool(cfg.ResourceList[0], d.Sys, dinfo, slog.Default())
	p.set(cfg.ResourceList[0], found["nvidia.com/vdpa_vhost"])
	r := allocate(t, p, "0000:65:00.3")
	if got := devSpecs(r); !reflect.DeepEqual(got, []string{"/dev/vhost-vdpa-1"}) {
		t.Errorf("device specs %v, want /dev/vhost-vdpa-1", got)
	}
	var info map[string]map[string]map[string]string
	if err := json.Unmarshal([]byte(r.Envs["PCIDEVICE_NVIDIA_COM_VDPA_VHOST_INFO"]), &info); err != nil {
		t.Fatal(err)
	}
	if info["0000:65:00.3"]["vdpa"]["mount"] != "/dev/vhost-vdpa-1" {
		t.Errorf("_INFO %v", info)
	}
	di, _ := devinfo.Load(dinfo.DPPath("nvidia.com/vdpa_vhost", "0000:65:00.3"))
	if di == nil || di.Type != "vdpa" || di.Vdpa == nil || di.Vdpa.ParentDevice != "vdpa1" || di.Vdpa.Driver != "vhost" ||
		di.Vdpa.Path != "/dev/vhost-vdpa-1" || di.Vdpa.PciAddress != "0000:65:00.3" || di.Vdpa.PfPciAddress != "0000:65:00.0" {
		t.Errorf("device-info %+v (vdpa %+v)", di, di.Vdpa)
	}
}

// Subfunctions of an mlx5 PF (deviceType auxNetDevice): selected by the PF's ids and netdev,
// with sfnum ranges in pfNames (upstream's docs/subfunctions example "p0#1-5"); the PF's own
// eth/rdma auxiliary devices are never taken; allocation names the subfunction.
func TestAuxNetDevicePools(t *testing.T) {
	dinfo := devinfo.Dir(t.TempDir())
	tr := pcitest.New(t)
	tr.AddPF(pcitest.PF{Address: "0000:03:00.0", Vendor: "15b3", Device: "a2d6", Driver: "mlx5_core", Netdev: "p0", TotalVFs: 8})
	tr.AddAux(pcitest.Aux{Parent: "0000:03:00.0", Name: "mlx5_core.eth.0", Driver: "mlx5_core.eth", SFNum: -1, Netdev: "p0"})
	for i, sfnum := range []int{1, 3, 7} {
		tr.AddAux(pcitest.Aux{Parent: "0000:03:00.0", Name: "mlx5_core.sf." + string(rune('2'+i)), Driver: "mlx5_core.sf", SFNum: sfnum,
			Netdev: "enp3s0f0s" + string(rune('0'+sfnum))})
	}
	cfg := mustParse(t, `{"resourceList":[{"resourceName":"bf2_sf","resourcePrefix":"nvidia.com","deviceType":"auxNetDevice",
	  "selectors":[{"vendors":["15b3"],"devices":["a2d6"],"pfNames":["p0#1-5"],"auxTypes":["sf"]}]}]}`)
	d := &Discoverer{Sys: pci.New(tr.Root), DefaultRouteLinks: noUplinks}
	found, err := d.Discover(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(found["nvidia.com/bf2_sf"]); !reflect.DeepEqual(got, []string{"mlx5_core.sf.2", "mlx5_core.sf.3"}) {
		t.Fatalf("pool %v, want the subfunctions with sfnum 1 and 3", got)
	}
	p := newPool(cfg.ResourceList[0], d.Sys, dinfo, slog.Default())
	p.set(cfg.ResourceList[0], found["nvidia.com/bf2_sf"])
	if resp, _, _ := p.list(); len(resp.Devices) != 2 || resp.Devices[0].Health != "Healthy" {
		t.Fatalf("listed %v", resp.Devices)
	}
	r := allocate(t, p, "mlx5_core.sf.3")
	if r.Envs["PCIDEVICE_NVIDIA_COM_BF2_SF"] != "mlx5_core.sf.3" || len(r.Devices) != 0 {
		t.Errorf("allocate: env %v, devices %v", r.Envs, r.Devices)
	}
	// A subfunction deleted (devlink port del) turns unhealthy.
	tr.RemoveAux("mlx5_core.sf.3")
	p.refreshHealth(nil)
	if resp, _, _ := p.list(); resp.Devices[1].ID != "mlx5_core.sf.3" || resp.Devices[1].Health != "Unhealthy" {
		t.Errorf("after removal listed %v", resp.Devices)
	}
}

// isRdma members get their verbs node and rdma_cm mounted, named in _INFO and device-info (an
// RDMA application in the pod needs them, as with upstream).
func TestAllocateRDMA(t *testing.T) {
	dinfo := devinfo.Dir(t.TempDir())
	tr := pcitest.New(t)
	tr.AddPF(pcitest.PF{Address: "0000:86:00.0", Vendor: "15b3", Device: "1017", Driver: "mlx5_core", Netdev: "p1", TotalVFs: 8})
	tr.AddVF(pcitest.VF{PF: "0000:86:00.0", Index: 0, Address: "0000:86:00.2", Vendor: "15b3", Device: "1018", Driver: "mlx5_core", Netdev: "p1v0"})
	tr.AddVF(pcitest.VF{PF: "0000:86:00.0", Index: 1, Address: "0000:86:00.3", Vendor: "15b3", Device: "1018", Driver: "mlx5_core", Netdev: "p1v1"})
	tr.SetRDMAVerbs("0000:86:00.2", "mlx5_4", 4)
	cfg := mustParse(t, `{"resourceList":[{"resourceName":"rdma","resourcePrefix":"nvidia.com","selectors":{"vendors":["15b3"],"isRdma":true}}]}`)
	d := &Discoverer{Sys: pci.New(tr.Root), DefaultRouteLinks: noUplinks}
	found, err := d.Discover(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(found["nvidia.com/rdma"]); !reflect.DeepEqual(got, []string{"0000:86:00.2"}) {
		t.Fatalf("pool %v, want only the VF with an RDMA device", got)
	}
	p := newPool(cfg.ResourceList[0], d.Sys, dinfo, slog.Default())
	p.set(cfg.ResourceList[0], found["nvidia.com/rdma"])
	r := allocate(t, p, "0000:86:00.2")
	if got := devSpecs(r); !reflect.DeepEqual(got, []string{"/dev/infiniband/rdma_cm", "/dev/infiniband/uverbs4"}) {
		t.Errorf("device specs %v", got)
	}
	var info map[string]map[string]map[string]string
	_ = json.Unmarshal([]byte(r.Envs["PCIDEVICE_NVIDIA_COM_RDMA_INFO"]), &info)
	if rd := info["0000:86:00.2"]["rdma"]; rd["uverbs"] != "/dev/infiniband/uverbs4" || rd["rdma_cm"] != "/dev/infiniband/rdma_cm" {
		t.Errorf("_INFO rdma %v", rd)
	}
	if di, _ := devinfo.Load(dinfo.DPPath("nvidia.com/rdma", "0000:86:00.2")); di == nil || di.Pci.RdmaDevice != "mlx5_4" {
		t.Errorf("device-info %+v", di)
	}
}

// pKeys selects InfiniBand functions by the partition key their port 1 carries.
func TestPKeysSelector(t *testing.T) {
	tr := pcitest.New(t)
	tr.AddPF(pcitest.PF{Address: "0000:86:00.0", Vendor: "15b3", Device: "1017", Driver: "mlx5_core", Netdev: "ib0", TotalVFs: 8})
	for i, k := range []uint16{0x8001, 0x8002, 0} {
		a := "0000:86:00." + string(rune('2'+i))
		tr.AddVF(pcitest.VF{PF: "0000:86:00.0", Index: i, Address: a, Vendor: "15b3", Device: "1018", Driver: "mlx5_core", Netdev: "ib0v" + string(rune('0'+i))})
		if k != 0 {
			tr.SetRDMA(a, "mlx5_"+string(rune('4'+i)))
			tr.SetPKey(a, "mlx5_"+string(rune('4'+i)), k)
		}
	}
	cfg := mustParse(t, `{"resourceList":[{"resourceName":"ib","selectors":{"pKeys":["0x8001","0X8003"]}}]}`)
	found, err := (&Discoverer{Sys: pci.New(tr.Root), DefaultRouteLinks: noUplinks}).Discover(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(found["intel.com/ib"]); !reflect.DeepEqual(got, []string{"0000:86:00.2"}) {
		t.Fatalf("pool %v, want only the VF with pkey 0x8001", got)
	}
}

// A VF of a switchdev PF is allocated with its representor in device-info (representor-device),
// found through sriovnet; a legacy-mode VF has none.
func TestAllocateRepresentor(t *testing.T) {
	dinfo := devinfo.Dir(t.TempDir())
	tr := pcitest.New(t)
	tr.AddPF(pcitest.PF{Address: "0000:03:00.0", Vendor: "15b3", Device: "101d", Driver: "mlx5_core", Netdev: "p0", TotalVFs: 8})
	tr.AddVF(pcitest.VF{PF: "0000:03:00.0", Index: 0, Address: "0000:03:00.2", Vendor: "15b3", Device: "101e", Driver: "mlx5_core", Netdev: "p0v0"})
	tr.AddVF(pcitest.VF{PF: "0000:03:00.0", Index: 1, Address: "0000:03:00.3", Vendor: "15b3", Device: "101e", Driver: "mlx5_core", Netdev: "p0v1"})
	tr.AddRepresentor("0000:03:00.0", "p0", "p0", "b8cef6fffe000001")
	tr.AddRepresentor("0000:03:00.0", "pf0vf1rep", "pf0vf1", "b8cef6fffe000001")
	cfg := mustParse(t, `{"resourceList":[{"resourceName":"sw","resourcePrefix":"nvidia.com","selectors":{"devices":["101e"]}}]}`)
	d := &Discoverer{Sys: pci.New(tr.Root), DefaultRouteLinks: noUplinks}
	found, err := d.Discover(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := newPool(cfg.ResourceList[0], d.Sys, dinfo, slog.Default())
	p.set(cfg.ResourceList[0], found["nvidia.com/sw"])
	allocate(t, p, "0000:03:00.2", "0000:03:00.3")
	for vf, want := range map[string]string{"0000:03:00.2": "", "0000:03:00.3": "pf0vf1rep"} {
		di, _ := devinfo.Load(dinfo.DPPath("nvidia.com/sw", vf))
		if di == nil || di.Pci.RepresentorDevice != want {
			t.Errorf("device-info of %s: %+v, want representor-device %q", vf, di, want)
		}
	}
}
