package pcitest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// SetOperState writes a netdev's operstate ("up", "down", ...), as the kernel publishes it
// under <device>/net/<netdev>/operstate.
func (t *Tree) SetOperState(addr, netdev, state string) {
	t.tb.Helper()
	t.write(devDir(addr)+"/net/"+netdev+"/operstate", state+"\n")
}

// SetNoIOMMU names the device's IOMMU group "vfio-noiommu", as vfio does when it runs without an
// IOMMU (enable_unsafe_noiommu_mode); its node is then /dev/vfio/noiommu-<group>.
func (t *Tree) SetNoIOMMU(addr string) {
	t.tb.Helper()
	g, err := os.Readlink(t.abs(devDir(addr) + "/iommu_group"))
	if err != nil {
		t.tb.Fatalf("pcitest: %s has no iommu_group: %v", addr, err)
	}
	t.write("kernel/iommu_groups/"+filepath.Base(g)+"/name", "vfio-noiommu\n")
}

// SetACPIIndex writes the firmware's acpi_index of the device.
func (t *Tree) SetACPIIndex(addr string, index int) {
	t.tb.Helper()
	t.write(devDir(addr)+"/acpi_index", strconv.Itoa(index)+"\n")
}

// SetRDMA gives the device an infiniband/<name> directory, as an RDMA-capable driver does.
func (t *Tree) SetRDMA(addr, name string) {
	t.tb.Helper()
	t.mkdir(devDir(addr) + "/infiniband/" + name)
}

// AddAccelerator adds a processing-accelerator function (class 0x120000), e.g. a crypto or FEC
// card, bound to drv.
func (t *Tree) AddAccelerator(addr, vendor, device, drv string, numa int) {
	t.tb.Helper()
	t.addFunction(addr, vendor, device, "0x120000", numa, 0)
	t.defaults[addr] = drv
	t.SetDriver(addr, drv)
}

// SetLinkType writes the netdev's ARPHRD type (1 ether, 32 infiniband).
func (t *Tree) SetLinkType(addr, netdev string, arphrd int) {
	t.tb.Helper()
	t.write(devDir(addr)+"/net/"+netdev+"/type", strconv.Itoa(arphrd)+"\n")
}

// SetRDMAVerbs gives the device an RDMA device with its verbs char device as the kernel lists
// it (infiniband/<name>, infiniband_verbs/uverbs<index> naming it in ibdev) and the rdma_cm
// misc device.
func (t *Tree) SetRDMAVerbs(addr, name string, index int) {
	t.tb.Helper()
	t.SetRDMA(addr, name)
	p := devDir(addr) + "/infiniband_verbs/uverbs" + strconv.Itoa(index)
	t.mkdir(p)
	t.write(p+"/ibdev", name+"\n")
	t.mkdir("class/misc/rdma_cm")
}

// SetPKey writes the partition key at index 0 of port 1 of the device's RDMA device (made with
// SetRDMA first), as the kernel shows it ("0x8001").
func (t *Tree) SetPKey(addr, ibdev string, pkey uint16) {
	t.tb.Helper()
	d := devDir(addr) + "/infiniband/" + ibdev + "/ports/1/pkeys"
	t.mkdir(d)
	t.write(d+"/0", fmt.Sprintf("0x%04x\n", pkey))
}
