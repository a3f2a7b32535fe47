package deviceplugin

import (
	"fmt"
	"testing"

	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/pci/pcitest"
)

// The fixture node (shaped like a two-socket server):
//
//	0000:3b:00.0 ens1f0  8086:1593 ice  NUMA 0, VFs 0000:3b:01.0-3 (8086:1889 iavf, ens1f0v0-3)
//	0000:3b:00.1 ens1f1  8086:1593 ice  NUMA 0, SR-IOV capable, no VFs
//	0000:86:00.0 ens2f0  15b3:1017 mlx5_core NUMA 1, VFs 0000:86:00.2-5 (15b3:1018):
//	             .2 .3 on mlx5_core (ens2f0v0, ens2f0v1; RDMA), .4 .5 on vfio-pci
//	0000:00:1f.6 eno1    8086:15bb e1000e, carries the default route
//	0000:00:1f.7 eno2    8086:15bb e1000e
//	0000:b0:00.0         8086:0d5c vfio-pci accelerator (FEC), NUMA 1
const (
	pf0      = "0000:3b:00.0"
	pf0b     = "0000:3b:00.1"
	pf1      = "0000:86:00.0"
	uplink   = "0000:00:1f.6"
	nic2     = "0000:00:1f.7"
	accel    = "0000:b0:00.0"
	upName   = "mnt-eno1"
	nic2Name = "mnt-eno2"
)

// fixtureTrees finds a fixture's tree from its root (tests that only get the Discoverer).
var fixtureTrees = map[string]*pcitest.Tree{}

func vf0(i int) string { return fmt.Sprintf("0000:3b:01.%d", i) }
func vf1(i int) string { return fmt.Sprintf("0000:86:00.%d", i+2) }

func fixture(t testing.TB) (*pcitest.Tree, *Discoverer) {
	t.Helper()
	tr := pcitest.New(t)
	tr.AddPF(pcitest.PF{Address: pf0, Vendor: "8086", Device: "1593", Driver: "ice", Netdev: "ens1f0", TotalVFs: 64, NUMANode: 0})
	tr.AddPF(pcitest.PF{Address: pf0b, Vendor: "8086", Device: "1593", Driver: "ice", Netdev: "ens1f1", TotalVFs: 64, NUMANode: 0})
	for i := 0; i < 4; i++ {
		tr.AddVF(pcitest.VF{PF: pf0, Index: i, Address: vf0(i), Vendor: "8086", Device: "1889", Driver: "iavf", Netdev: fmt.Sprintf("ens1f0v%d", i)})
	}
	tr.AddPF(pcitest.PF{Address: pf1, Vendor: "15b3", Device: "1017", Driver: "mlx5_core", Netdev: "ens2f0", TotalVFs: 8, NUMANode: 1})
	for i := 0; i < 4; i++ {
		v := pcitest.VF{PF: pf1, Index: i, Address: vf1(i), Vendor: "15b3", Device: "1018", Driver: "mlx5_core", Netdev: fmt.Sprintf("ens2f0v%d", i)}
		if i >= 2 {
			v.DefaultDriver, v.Driver = "mlx5_core", "vfio-pci"
		}
		tr.AddVF(v)
	}
	tr.SetRDMA(vf1(0), "mlx5_2")
	tr.SetRDMA(vf1(1), "mlx5_3")
	tr.AddNIC(pcitest.NIC{Address: uplink, Vendor: "8086", Device: "15bb", Driver: "e1000e", Netdev: upName, NUMANode: -1})
	tr.AddNIC(pcitest.NIC{Address: nic2, Vendor: "8086", Device: "15bb", Driver: "e1000e", Netdev: nic2Name, NUMANode: -1})
	tr.SetACPIIndex(nic2, 2)
	tr.AddAccelerator(accel, "8086", "0d5c", "vfio-pci", 1)
	tr.SetOperState(pf0, "ens1f0", "up")
	tr.SetOperState(pf1, "ens2f0", "up")
	fixtureTrees[tr.Root] = tr
	d := &Discoverer{Sys: pci.New(tr.Root), DefaultRouteLinks: func() ([]string, error) { return []string{upName}, nil }}
	return tr, d
}
