// Package pcitest builds fake sysfs trees shaped like the kernel's, for tests of code that
// reads PCI and SR-IOV state. It is the only fake in the project: hardware that is not there.
package pcitest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// TB is the part of testing.TB the tree needs, so programs (make demo) can build trees too.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	TempDir() string
	Cleanup(func())
}

// Tree is a fake sysfs root. Devices live under devices/pci0000:00/<addr> and are linked from
// bus/pci/devices, as on a real host.
type Tree struct {
	Root string

	tb        TB
	mu        sync.Mutex
	nextGroup int
	defaults  map[string]string   // address -> the driver the kernel would pick
	netdevs   map[string][]string // address -> netdev names while bound to its default driver
	refuse    map[string]string   // address -> driver whose probe fails for it
	sriov     map[string]func(index int) VF
}

// PF describes an SR-IOV physical function.
type PF struct {
	Address, Vendor, Device, Driver, Netdev string
	TotalVFs                                int
	NUMANode                                int
	IOMMUGroup                              int // 0: a fresh group; -1: no IOMMU
}

// VF describes a virtual function of a PF added earlier. Driver is the driver bound now
// (e.g. "vfio-pci"); DefaultDriver the netdev driver the kernel picks (defaults to Driver).
type VF struct {
	PF                                      string
	Index                                   int
	Address, Vendor, Device, Driver, Netdev string
	DefaultDriver                           string
	IOMMUGroup                              int
}

// NIC is a plain network device without SR-IOV.
type NIC struct {
	Address, Vendor, Device, Driver, Netdev string
	NUMANode                                int
	IOMMUGroup                              int
}

// New returns an empty tree in a temporary directory removed after the test.
func New(tb TB) *Tree {
	tb.Helper()
	t := &Tree{Root: tb.TempDir(), tb: tb, nextGroup: 10,
		defaults: map[string]string{}, netdevs: map[string][]string{}, refuse: map[string]string{}, sriov: map[string]func(int) VF{}}
	for _, d := range []string{"devices/pci0000:00", "bus/pci/devices", "bus/pci/drivers", "kernel/iommu_groups", "class/net"} {
		t.mkdir(d)
	}
	t.write("bus/pci/drivers_probe", "")
	return t
}

func (t *Tree) abs(rel string) string { return filepath.Join(t.Root, rel) }

func (t *Tree) mkdir(rel string) {
	t.tb.Helper()
	if err := os.MkdirAll(t.abs(rel), 0o755); err != nil {
		t.tb.Fatalf("pcitest: %v", err)
	}
}

func (t *Tree) write(rel, content string) {
	t.tb.Helper()
	if err := os.WriteFile(t.abs(rel), []byte(content), 0o644); err != nil {
		t.tb.Fatalf("pcitest: %v", err)
	}
}

// symlink makes rel point at target, given relative to the root, with a relative link as sysfs does.
func (t *Tree) symlink(target, rel string) {
	t.tb.Helper()
	from := filepath.Dir(t.abs(rel))
	r, err := filepath.Rel(from, t.abs(target))
	if err != nil {
		t.tb.Fatalf("pcitest: %v", err)
	}
	_ = os.Remove(t.abs(rel))
	if err := os.Symlink(r, t.abs(rel)); err != nil {
		t.tb.Fatalf("pcitest: %v", err)
	}
}

func devDir(addr string) string { return "devices/pci0000:00/" + addr }

// AddDriver registers a driver as if its module were loaded.
func (t *Tree) AddDriver(name string) {
	d := "bus/pci/drivers/" + name
	if _, err := os.Stat(t.abs(d)); err == nil {
		return
	}
	t.mkdir(d)
	for _, f := range []string{"bind", "unbind", "new_id"} {
		t.write(d+"/"+f, "")
	}
}

func (t *Tree) addFunction(addr, vendor, device, class string, numa, group int) {
	t.tb.Helper()
	dd := devDir(addr)
	t.mkdir(dd)
	t.write(dd+"/vendor", "0x"+vendor+"\n")
	t.write(dd+"/device", "0x"+device+"\n")
	t.write(dd+"/class", class+"\n")
	t.write(dd+"/numa_node", strconv.Itoa(numa)+"\n")
	t.write(dd+"/driver_override", "(null)\n")
	t.symlink("bus/pci", dd+"/subsystem")
	t.symlink(dd, "bus/pci/devices/"+addr)
	if group == 0 {
		group = t.nextGroup
		t.nextGroup++
	}
	if group > 0 {
		g := "kernel/iommu_groups/" + strconv.Itoa(group)
		t.mkdir(g + "/devices")
		t.symlink(dd, g+"/devices/"+addr)
		t.symlink(g, dd+"/iommu_group")
	}
}

// AddPF adds a physical function with sriov_totalvfs and an empty sriov_numvfs.
func (t *Tree) AddPF(pf PF) {
	t.addFunction(pf.Address, pf.Vendor, pf.Device, "0x020000", pf.NUMANode, pf.IOMMUGroup)
	dd := devDir(pf.Address)
	t.write(dd+"/sriov_totalvfs", strconv.Itoa(pf.TotalVFs)+"\n")
	t.write(dd+"/sriov_numvfs", "0\n")
	t.defaults[pf.Address] = pf.Driver
	if pf.Netdev != "" {
		t.netdevs[pf.Address] = []string{pf.Netdev}
	}
	t.SetDriver(pf.Address, pf.Driver)
}

// AddNIC adds a network device without SR-IOV.
func (t *Tree) AddNIC(n NIC) {
	t.addFunction(n.Address, n.Vendor, n.Device, "0x020000", n.NUMANode, n.IOMMUGroup)
	t.defaults[n.Address] = n.Driver
	if n.Netdev != "" {
		t.netdevs[n.Address] = []string{n.Netdev}
	}
	t.SetDriver(n.Address, n.Driver)
}

// AddVF adds a VF with its physfn link, the PF's virtfnN link and a bumped sriov_numvfs.
func (t *Tree) AddVF(vf VF) {
	t.tb.Helper()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.addVF(vf)
}

func (t *Tree) addVF(vf VF) {
	pfDir := devDir(vf.PF)
	numa, _ := os.ReadFile(t.abs(pfDir + "/numa_node"))
	n, _ := strconv.Atoi(strings.TrimSpace(string(numa)))
	t.addFunction(vf.Address, vf.Vendor, vf.Device, "0x020000", n, vf.IOMMUGroup)
	t.symlink(pfDir, devDir(vf.Address)+"/physfn")
	cnt, _ := os.ReadFile(t.abs(pfDir + "/sriov_numvfs"))
	c, _ := strconv.Atoi(strings.TrimSpace(string(cnt)))
	if vf.Index+1 > c {
		t.write(pfDir+"/sriov_numvfs", strconv.Itoa(vf.Index+1)+"\n")
	}
	def := vf.DefaultDriver
	if def == "" {
		def = vf.Driver
	}
	t.defaults[vf.Address] = def
	if vf.Netdev != "" {
		t.netdevs[vf.Address] = []string{vf.Netdev}
	}
	t.setDriver(vf.Address, vf.Driver)
	if vf.Driver != "" && vf.Driver != def {
		t.write(devDir(vf.Address)+"/driver_override", vf.Driver+"\n")
	}
	// The PF's virtfn link last: the kernel's write to sriov_numvfs returns once the VFs are
	// added and probed, so a reader that finds the link must not see a VF still unbound (the
	// emulated kernel adds VFs beside the code under test).
	t.symlink(devDir(vf.Address), fmt.Sprintf("%s/virtfn%d", pfDir, vf.Index))
}

// SetDriver binds the device to drv ("" unbinds), as a kernel bind would: the netdevs appear
// when the device is on its default (netdev) driver and vanish otherwise.
func (t *Tree) SetDriver(addr, drv string) {
	t.tb.Helper()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.setDriver(addr, drv)
}

func (t *Tree) setDriver(addr, drv string) {
	dd := devDir(addr)
	if old, err := os.Readlink(t.abs(dd + "/driver")); err == nil {
		_ = os.Remove(t.abs("bus/pci/drivers/" + filepath.Base(old) + "/" + addr))
		_ = os.Remove(t.abs(dd + "/driver"))
	}
	_ = os.RemoveAll(t.abs(dd + "/net"))
	if drv == "" {
		return
	}
	t.AddDriver(drv)
	// Netdevs first: the emulated bind runs beside the code under test, and a reader that saw
	// the driver link before the netdev would report a half-bound device.
	if drv == t.defaults[addr] {
		for _, n := range t.netdevs[addr] {
			t.addNetdevDir(addr, n)
		}
	}
	t.symlink("bus/pci/drivers/"+drv, dd+"/driver")
	t.symlink(dd, "bus/pci/drivers/"+drv+"/"+addr)
}

func (t *Tree) addNetdevDir(addr, name string) {
	nd := devDir(addr) + "/net/" + name
	t.mkdir(nd)
	t.write(nd+"/type", "1\n")
	t.symlink(nd, "class/net/"+name)
}

// SetNetdevs replaces the device's netdev names (e.g. veth links the test created).
func (t *Tree) SetNetdevs(addr string, names ...string) {
	t.tb.Helper()
	for _, old := range t.netdevs[addr] {
		_ = os.Remove(t.abs("class/net/" + old))
	}
	_ = os.RemoveAll(t.abs(devDir(addr) + "/net"))
	t.netdevs[addr] = names
	for _, n := range names {
		t.addNetdevDir(addr, n)
	}
}

// RemoveNetdev makes a netdev vanish from sysfs, as when the driver loses it.
func (t *Tree) RemoveNetdev(addr, name string) {
	_ = os.RemoveAll(t.abs(devDir(addr) + "/net/" + name))
	_ = os.Remove(t.abs("class/net/" + name))
}

// EmulateSRIOV makes writes to the PF's sriov_numvfs create or remove VFs (described by vf for
// each index) once StartKernel runs, as the PF driver does on a host.
func (t *Tree) EmulateSRIOV(pf string, vf func(index int) VF) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sriov[pf] = vf
}

// AddIgbPF adds an Intel 82576 PF (8086:10c9, igb, 7 VFs) whose VFs appear on writes to
// sriov_numvfs as 8086:10ca on igbvf at <vfSlot>.<index>, netdevs <netdev>v<index>: the NIC of
// the e2e/vm guest, for tests and the demo that mirror it.
func (t *Tree) AddIgbPF(addr, netdev string, vfSlot int) {
	t.AddPF(PF{Address: addr, Vendor: "8086", Device: "10c9", Driver: "igb", Netdev: netdev, TotalVFs: 7})
	t.EmulateSRIOV(addr, func(i int) VF {
		return VF{Address: fmt.Sprintf("0000:00:%02x.%d", vfSlot, i), Vendor: "8086", Device: "10ca",
			Driver: "igbvf", Netdev: fmt.Sprintf("%sv%d", netdev, i)}
	})
	t.AddDriver("igbvf")
}

func (t *Tree) numVFsTick() {
	for pf, gen := range t.sriov {
		b, err := os.ReadFile(t.abs(devDir(pf) + "/sriov_numvfs"))
		if err != nil {
			continue
		}
		want, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			continue
		}
		have := 0
		for ; ; have++ {
			if _, err := os.Lstat(t.abs(fmt.Sprintf("%s/virtfn%d", devDir(pf), have))); err != nil {
				break
			}
		}
		for i := have - 1; i >= want; i-- {
			t.removeVF(pf, i)
		}
		for i := have; i < want; i++ {
			v := gen(i)
			v.PF, v.Index = pf, i
			t.addVF(v)
		}
	}
}

func (t *Tree) removeVF(pf string, i int) {
	link := t.abs(fmt.Sprintf("%s/virtfn%d", devDir(pf), i))
	target, err := os.Readlink(link)
	if err != nil {
		return
	}
	addr := filepath.Base(target)
	t.setDriver(addr, "")
	_ = os.Remove(link)
	if g, err := os.Readlink(t.abs(devDir(addr) + "/iommu_group")); err == nil {
		_ = os.Remove(filepath.Join(filepath.Dir(t.abs(devDir(addr)+"/iommu_group")), g, "devices", addr))
	}
	_ = os.Remove(t.abs("bus/pci/devices/" + addr))
	_ = os.RemoveAll(t.abs(devDir(addr)))
}

// RefuseBind makes drv's probe fail for the device, as vfio-pci does for a device it cannot
// take; the emulated kernel then leaves the device unbound.
func (t *Tree) RefuseBind(addr, drv string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.refuse[addr] = drv
}

// DevicePath returns the absolute path of a device's sysfs directory.
func (t *Tree) DevicePath(addr string) string { return t.abs(devDir(addr)) }

// StartKernel emulates the kernel's side of driver binding until the test ends: writes to a
// driver's unbind and bind files and to bus/pci/drivers_probe take effect as they would on a
// host (probe honours driver_override, else the device's default driver, if loaded).
func (t *Tree) StartKernel() {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				t.kernelTick()
			}
		}
	}()
	t.tb.Cleanup(func() { close(done); <-stopped })
}

// take returns the addresses written to a sysfs file and empties it.
func (t *Tree) take(rel string) []string {
	b, err := os.ReadFile(t.abs(rel))
	if err != nil || len(strings.TrimSpace(string(b))) == 0 {
		return nil
	}
	_ = os.WriteFile(t.abs(rel), nil, 0o644)
	return strings.Fields(string(b))
}

func (t *Tree) kernelTick() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.numVFsTick()
	drivers, _ := os.ReadDir(t.abs("bus/pci/drivers"))
	unbinds := func() {
		for _, d := range drivers {
			for _, a := range t.take("bus/pci/drivers/" + d.Name() + "/unbind") {
				t.setDriver(a, "")
			}
		}
	}
	unbinds()
	for _, d := range drivers {
		for _, a := range t.take("bus/pci/drivers/" + d.Name() + "/bind") {
			if cur, _ := os.Readlink(t.abs(devDir(a) + "/driver")); cur == "" {
				t.setDriver(a, d.Name())
			}
		}
	}
	probes := t.take("bus/pci/drivers_probe")
	if len(probes) > 0 {
		unbinds() // an unbind written just before the probe must be seen first
	}
	for _, a := range probes {
		if cur, _ := os.Readlink(t.abs(devDir(a) + "/driver")); cur != "" {
			continue
		}
		ov, _ := os.ReadFile(t.abs(devDir(a) + "/driver_override"))
		drv := strings.TrimSpace(string(ov))
		if drv == "" || drv == "(null)" {
			drv = t.defaults[a]
		}
		if t.refuse[a] == drv {
			continue // the driver's probe failed: the device stays unbound
		}
		if _, err := os.Stat(t.abs("bus/pci/drivers/" + drv)); drv != "" && err == nil {
			t.setDriver(a, drv)
		}
	}
}
