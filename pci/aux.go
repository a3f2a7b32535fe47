package pci

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// AuxDevice is a device on the auxiliary bus whose parent is a PCI function, as mlx5 publishes
// its subfunctions (mlx5_core.sf.<n>) and the PF's own parts (mlx5_core.eth.<n>, ...rdma.<n>):
// /sys/bus/auxiliary/devices/<name> links to <pci device dir>/<name>.
type AuxDevice struct {
	Name    string   `json:"name"`
	Type    string   `json:"type"`   // the middle part of the name: "sf", "eth", "rdma", ...
	Parent  string   `json:"parent"` // PCI address
	Driver  string   `json:"driver"`
	Netdevs []string `json:"netdevs,omitempty"`
	// SFNum is a subfunction's number (its sfnum file), -1 for other auxiliary devices.
	SFNum int  `json:"sfnum"`
	RDMA  bool `json:"rdma"`
}

// AuxType returns the type part of an auxiliary device name ("mlx5_core.sf.4" -> "sf"), "" when
// the name does not have the <driver>.<type>.<id> shape the kernel gives it.
func AuxType(name string) string {
	parts := strings.Split(name, ".")
	if len(parts) < 3 || parts[len(parts)-2] == "" {
		return ""
	}
	return parts[len(parts)-2]
}

func (s *SysFS) auxPath(name string, elem ...string) string {
	return s.path(append([]string{"bus", "auxiliary", "devices", name}, elem...)...)
}

// AuxDevices lists the auxiliary devices whose parent is the PCI function, sorted by name.
func (s *SysFS) AuxDevices(pciAddr string) ([]AuxDevice, error) {
	entries, err := os.ReadDir(s.devPath(pciAddr))
	if err != nil {
		return nil, fmt.Errorf("pci %s: %w", pciAddr, err)
	}
	var out []AuxDevice
	for _, e := range entries {
		if AuxType(e.Name()) == "" {
			continue
		}
		// Only children the auxiliary bus lists are auxiliary devices (a PCI function's
		// directory has other dotted names too, e.g. firmware_node links).
		if _, err := os.Stat(s.auxPath(e.Name())); err != nil {
			continue
		}
		d, err := s.Aux(e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, *d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Aux reads one auxiliary device.
func (s *SysFS) Aux(name string) (*AuxDevice, error) {
	dir := s.auxPath(name)
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("auxiliary device %s: %w", name, err)
	}
	d := &AuxDevice{Name: name, Type: AuxType(name), Parent: filepath.Base(filepath.Dir(real)), SFNum: -1}
	if !ValidAddress(d.Parent) {
		return nil, fmt.Errorf("auxiliary device %s: parent %s is not a PCI function", name, d.Parent)
	}
	if d.Driver, err = linkBase(filepath.Join(dir, "driver")); err != nil {
		return nil, fmt.Errorf("auxiliary device %s: read driver link: %w", name, err)
	}
	if n, err := readInt(filepath.Join(dir, "sfnum")); err == nil {
		d.SFNum = n
	}
	if entries, err := os.ReadDir(filepath.Join(dir, "net")); err == nil {
		for _, e := range entries {
			d.Netdevs = append(d.Netdevs, e.Name())
		}
		sort.Strings(d.Netdevs)
	}
	if _, err := os.Stat(filepath.Join(dir, "infiniband")); err == nil {
		d.RDMA = true
	}
	return d, nil
}

// AuxLinkType is the link type of the auxiliary device's first netdev, "" without one.
func (s *SysFS) AuxLinkType(d *AuxDevice) string {
	if len(d.Netdevs) == 0 {
		return ""
	}
	t, err := readTrimmed(s.auxPath(d.Name, "net", d.Netdevs[0], "type"))
	if err != nil {
		return ""
	}
	return arphrdName(t)
}

// RDMACharDevices returns the /dev/infiniband nodes a process needs to use the function's RDMA
// device: its verbs (uverbs<N>) and MAD (umad<N>, issm<N>) nodes, which the kernel lists under
// the function's infiniband_verbs/ and infiniband_mad/, and the shared rdma_cm when that misc
// device exists. Empty when the function has no RDMA device.
func (s *SysFS) RDMACharDevices(addr string) []string {
	var out []string
	for _, class := range []string{"infiniband_verbs", "infiniband_mad"} {
		entries, _ := os.ReadDir(s.devPath(addr, class))
		for _, e := range entries {
			if n := e.Name(); strings.HasPrefix(n, "uverbs") || strings.HasPrefix(n, "umad") || strings.HasPrefix(n, "issm") {
				out = append(out, "/dev/infiniband/"+n)
			}
		}
	}
	if len(out) == 0 {
		return nil
	}
	if _, err := os.Stat(s.path("class", "misc", "rdma_cm")); err == nil {
		out = append(out, "/dev/infiniband/rdma_cm")
	}
	sort.Strings(out)
	return out
}

// RDMADevice is the name of the function's RDMA (infiniband/) device, "" without one.
func (s *SysFS) RDMADevice(addr string) string {
	entries, _ := os.ReadDir(s.devPath(addr, "infiniband"))
	if len(entries) == 0 {
		return ""
	}
	return entries[0].Name()
}

// PKey is the partition key at index 0 of port 1 of the function's RDMA device (what an
// InfiniBand VF is given), -1 when it has none.
func (s *SysFS) PKey(addr string) int {
	ib := s.RDMADevice(addr)
	if ib == "" {
		return -1
	}
	v, err := readTrimmed(s.devPath(addr, "infiniband", ib, "ports", "1", "pkeys", "0"))
	if err != nil {
		return -1
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(v), "0x"), 16, 16)
	if err != nil {
		return -1
	}
	return int(n)
}
