package pci

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/k8snetworkplumbingwg/sriovnet"
)

// Device is one PCI function as sysfs describes it.
type Device struct {
	Address    string   `json:"address"`
	Vendor     string   `json:"vendor"`
	DeviceID   string   `json:"device"`
	VendorName string   `json:"vendorName,omitempty"`
	DeviceName string   `json:"deviceName,omitempty"`
	Class      string   `json:"class"`
	Driver     string   `json:"driver"`
	Netdevs    []string `json:"netdevs,omitempty"`
	Netdev     string   `json:"netdev"`
	NUMANode   int      `json:"numaNode"`
	IOMMUGroup int      `json:"iommuGroup"`
	LinkType   string   `json:"linkType,omitempty"`
	TotalVFs   int      `json:"totalVfs"`
	NumVFs     int      `json:"numVfs"`
	VFs        []string `json:"vfs,omitempty"`
	PFAddress  string   `json:"pfAddress"`
	VFIndex    int      `json:"vfIndex"`
}

// IsPF reports whether the device can carry SR-IOV VFs.
func (d *Device) IsPF() bool { return d.TotalVFs > 0 }

// IsVF reports whether the device is an SR-IOV virtual function.
func (d *Device) IsVF() bool { return d.PFAddress != "" }

// ErrNoDevice is returned (wrapped) when no PCI device has the given address.
var ErrNoDevice = errors.New("no such PCI device")

var addrRe = regexp.MustCompile(`^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$`)

// ValidAddress reports whether s is a full PCI address (domain:bus:device.function).
func ValidAddress(s string) bool { return addrRe.MatchString(s) }

// Exists reports whether sysfs has a device at addr.
func (s *SysFS) Exists(addr string) bool {
	_, err := os.Stat(s.devPath(addr))
	return err == nil
}

func (s *SysFS) mustExist(addr string) error {
	if !ValidAddress(addr) {
		return fmt.Errorf("pci %q: not a PCI address (want 0000:00:00.0)", addr)
	}
	if !s.Exists(addr) {
		return fmt.Errorf("pci %s: %w under %s", addr, ErrNoDevice, s.path("bus", "pci", "devices"))
	}
	return nil
}

// Device reads one device of any class.
func (s *SysFS) Device(addr string) (*Device, error) {
	d, err := s.deviceOwnFields(addr)
	if err != nil {
		return nil, err
	}
	if s.IsVF(addr) {
		if d.PFAddress, d.VFIndex, err = s.PFOf(addr); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// deviceOwnFields reads everything but a VF's PF and index (which cost a walk of the PF's
// virtfn links).
func (s *SysFS) deviceOwnFields(addr string) (*Device, error) {
	if err := s.mustExist(addr); err != nil {
		return nil, err
	}
	d := &Device{Address: addr, VFIndex: -1, NUMANode: -1, IOMMUGroup: -1}
	var err error
	if d.Vendor, err = s.hexID(addr, "vendor"); err != nil {
		return nil, err
	}
	if d.DeviceID, err = s.hexID(addr, "device"); err != nil {
		return nil, err
	}
	d.Class, _ = readTrimmed(s.devPath(addr, "class"))
	if d.Driver, err = s.Driver(addr); err != nil {
		return nil, err
	}
	if d.Netdevs, err = s.Netdevs(addr); err != nil {
		return nil, err
	}
	if len(d.Netdevs) > 0 {
		d.Netdev = d.Netdevs[0]
		d.LinkType = s.linkType(addr, d.Netdev)
	}
	if n, err := readInt(s.devPath(addr, "numa_node")); err == nil {
		d.NUMANode = n
	}
	if d.IOMMUGroup, err = s.IOMMUGroup(addr); err != nil {
		return nil, err
	}
	if n, err := readInt(s.devPath(addr, "sriov_totalvfs")); err == nil {
		d.TotalVFs = n
		if d.NumVFs, err = readInt(s.devPath(addr, "sriov_numvfs")); err != nil {
			return nil, fmt.Errorf("pci %s: %w", addr, err)
		}
		if d.VFs, err = s.VFs(addr); err != nil {
			return nil, err
		}
	}
	return d, nil
}

func (s *SysFS) hexID(addr, file string) (string, error) {
	v, err := readTrimmed(s.devPath(addr, file))
	if err != nil {
		return "", fmt.Errorf("pci %s: read %s: %w", addr, file, err)
	}
	return strings.TrimPrefix(strings.ToLower(v), "0x"), nil
}

// NetDevices returns every network-class (0x02xxxx) PCI device, sorted by address.
func (s *SysFS) NetDevices() ([]Device, error) {
	entries, err := os.ReadDir(s.path("bus", "pci", "devices"))
	if err != nil {
		return nil, fmt.Errorf("list PCI devices under %s: %w", s.Root, err)
	}
	var out []Device
	for _, e := range entries {
		class, err := readTrimmed(s.devPath(e.Name(), "class"))
		if err != nil || !strings.HasPrefix(class, "0x02") {
			continue
		}
		d, err := s.Device(e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, *d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Address < out[j].Address })
	return out, nil
}

// Driver returns the name of the driver bound to the device, "" when unbound.
func (s *SysFS) Driver(addr string) (string, error) {
	drv, err := linkBase(s.devPath(addr, "driver"))
	if err != nil {
		return "", fmt.Errorf("pci %s: read driver link: %w", addr, err)
	}
	return drv, nil
}

// Netdevs lists the kernel network interfaces of the device (none for vfio-pci bound VFs),
// sorted; sriovnet's GetNetDevicesFromPci reads them.
func (s *SysFS) Netdevs(addr string) ([]string, error) {
	// sriovnet reports a missing net/ directory as an unwrapped error; absent means none.
	if _, err := os.Stat(s.devPath(addr, "net")); os.IsNotExist(err) {
		return nil, nil
	}
	var names []string
	err := s.withSriovnet(func() error {
		var e error
		names, e = sriovnet.GetNetDevicesFromPci(addr)
		return e
	})
	if err != nil {
		if !s.Exists(addr) {
			return nil, nil // the device left while we looked (a VF being removed)
		}
		return nil, fmt.Errorf("pci %s: list netdevs: %w", addr, err)
	}
	sort.Strings(names)
	return names, nil
}

// linkType maps the netdev's ARPHRD type to the names netlink uses for encap types.
func (s *SysFS) linkType(addr, netdev string) string {
	t, err := readTrimmed(s.devPath(addr, "net", netdev, "type"))
	if err != nil {
		return ""
	}
	return arphrdName(t)
}

func arphrdName(t string) string {
	switch t {
	case "1":
		return "ether"
	case "32":
		return "infiniband"
	case "772":
		return "loopback"
	default:
		return "arphrd-" + t
	}
}

// IOMMUGroup returns the device's IOMMU group, -1 when it has none (IOMMU off).
func (s *SysFS) IOMMUGroup(addr string) (int, error) {
	g, err := linkBase(s.devPath(addr, "iommu_group"))
	if err != nil {
		return -1, fmt.Errorf("pci %s: read iommu_group: %w", addr, err)
	}
	if g == "" {
		return -1, nil
	}
	n, err := strconv.Atoi(g)
	if err != nil {
		return -1, fmt.Errorf("pci %s: iommu group %q is not a number", addr, g)
	}
	return n, nil
}

// VFIODevicePath returns the /dev/vfio node a process opens for this device: /dev/vfio/<group>,
// or /dev/vfio/noiommu-<group> when vfio runs without an IOMMU (the group is then named
// "vfio-noiommu" in sysfs).
func (s *SysFS) VFIODevicePath(addr string) (string, error) {
	if err := s.mustExist(addr); err != nil {
		return "", err
	}
	g, err := s.IOMMUGroup(addr)
	if err != nil {
		return "", err
	}
	if g < 0 {
		return "", fmt.Errorf("pci %s: no iommu_group: the IOMMU is off and vfio noiommu mode is not enabled", addr)
	}
	name, _ := readTrimmed(s.path("kernel", "iommu_groups", strconv.Itoa(g), "name"))
	if name == "vfio-noiommu" {
		return fmt.Sprintf("/dev/vfio/noiommu-%d", g), nil
	}
	return fmt.Sprintf("/dev/vfio/%d", g), nil
}

// IsVF reports whether the device is an SR-IOV VF (it has a physfn link).
func (s *SysFS) IsVF(addr string) bool {
	_, err := os.Lstat(s.devPath(addr, "physfn"))
	return err == nil
}

// PFOf returns the PF address of a VF and the VF's index on that PF.
func (s *SysFS) PFOf(vfAddr string) (string, int, error) {
	if err := s.mustExist(vfAddr); err != nil {
		return "", -1, err
	}
	if !s.IsVF(vfAddr) {
		return "", -1, fmt.Errorf("pci %s: not an SR-IOV VF (no physfn link)", vfAddr)
	}
	var pf string
	err := s.withSriovnet(func() error {
		var e error
		pf, e = sriovnet.GetPfPciFromVfPci(vfAddr)
		return e
	})
	if err != nil {
		return "", -1, fmt.Errorf("pci %s: read physfn: %w", vfAddr, err)
	}
	// The index comes from the PF's virtfn links, read here: sriovnet's
	// GetVfIndexByPciAddress globs and reads links with os directly, past its filesystem seam,
	// so it would read /sys whatever root we were given.
	vfs, err := s.VFs(pf)
	if err != nil {
		return "", -1, err
	}
	for i, a := range vfs {
		if a == vfAddr {
			return pf, i, nil
		}
	}
	return "", -1, fmt.Errorf("pci %s: PF %s lists no virtfn link to it", vfAddr, pf)
}

var virtfnRe = regexp.MustCompile(`^virtfn(\d+)$`)

// VFs returns a PF's VF addresses ordered by VF index (index i at position i).
func (s *SysFS) VFs(pfAddr string) ([]string, error) {
	entries, err := os.ReadDir(s.devPath(pfAddr))
	if err != nil {
		return nil, fmt.Errorf("pci %s: %w", pfAddr, err)
	}
	type vf struct {
		idx  int
		addr string
	}
	var vfs []vf
	for _, e := range entries {
		m := virtfnRe.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		idx, _ := strconv.Atoi(m[1])
		a, err := linkBase(filepath.Join(s.devPath(pfAddr), e.Name()))
		if err != nil {
			return nil, fmt.Errorf("pci %s: read %s: %w", pfAddr, e.Name(), err)
		}
		vfs = append(vfs, vf{idx, a})
	}
	sort.Slice(vfs, func(i, j int) bool { return vfs[i].idx < vfs[j].idx })
	out := make([]string, len(vfs))
	for i, v := range vfs {
		if v.idx != i {
			return nil, fmt.Errorf("pci %s: virtfn links are not contiguous (missing virtfn%d)", pfAddr, i)
		}
		out[i] = v.addr
	}
	return out, nil
}

// VFAddress returns the address of VF index on the PF.
func (s *SysFS) VFAddress(pfAddr string, index int) (string, error) {
	a, err := linkBase(s.devPath(pfAddr, fmt.Sprintf("virtfn%d", index)))
	if err != nil {
		return "", fmt.Errorf("pci %s: read virtfn%d: %w", pfAddr, index, err)
	}
	if a == "" {
		return "", fmt.Errorf("pci %s: has no VF %d", pfAddr, index)
	}
	return a, nil
}

// ByNetdev finds the PCI address of a netdev by its name, looking through network devices.
func (s *SysFS) ByNetdev(name string) (string, error) {
	// class/net/<name> links into the device tree: .../<pci addr>/net/<name>.
	t, err := os.Readlink(s.path("class", "net", name))
	if err == nil {
		if addr := filepath.Base(filepath.Dir(filepath.Dir(t))); ValidAddress(addr) {
			return addr, nil
		}
	}
	devs, err := s.NetDevices()
	if err != nil {
		return "", err
	}
	for _, d := range devs {
		for _, n := range d.Netdevs {
			if n == name {
				return d.Address, nil
			}
		}
	}
	return "", fmt.Errorf("netdev %s: no PCI device under %s has it", name, s.Root)
}
