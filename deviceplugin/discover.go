package deviceplugin

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/multinet-io/multinet/pci"
)

// Device is one allocatable unit of a pool: a PCI function or a vhost-user socket slot.
type Device struct {
	ID string // PCI address, or the slot name for vhost-user
	// PCI is the function as discovery saw it (nil for a slot). Its Driver and Netdevs are the
	// baseline health compares against.
	PCI      *pci.Device
	PFNetdev string // the PF's netdev, for VFs whose PF has one
	VhostNet bool   // the selector that took the device asked for /dev/vhost-net
	RDMA     bool   // the selector that took the device asked for its RDMA device (isRdma)
	Slot     *Slot
	// Aux is set for a member of an auxNetDevice pool: ID is its name, PCI its parent.
	Aux *pci.AuxDevice
	// Vdpa is the VF's vDPA device of the type the selector asked for (vdpaType).
	Vdpa *pci.VdpaDevice
}

// NUMANode is the device's NUMA node, -1 when unknown.
func (d *Device) NUMANode() int {
	if d.PCI == nil {
		return -1
	}
	return d.PCI.NUMANode
}

// PF is the device's PF address, or its own address when it is not a VF ("" for slots).
func (d *Device) PF() string {
	if d.PCI == nil {
		return ""
	}
	if d.PCI.PFAddress != "" {
		return d.PCI.PFAddress
	}
	return d.PCI.Address
}

// Slot is one vhost-user socket slot.
type Slot struct {
	Mode            string
	HostDir         string
	ContainerDir    string
	HostSocket      string
	ContainerSocket string
}

// Discoverer turns sysfs into pool members.
type Discoverer struct {
	Sys *pci.SysFS
	// DefaultRouteLinks names the netdevs carrying a default route (IPv4 or IPv6, and those
	// under a bond, bridge or VLAN that does); their devices are never pooled (upstream rule:
	// do not hand the node's uplink to a pod). Nil: HostDefaultRouteLinks.
	DefaultRouteLinks func() ([]string, error)
}

// classFor maps a pool type to the PCI class prefix its devices carry.
var classFor = map[string]string{TypeNetDevice: "0x02", TypeAccelerator: "0x12"}

// candidate is a PCI device with the facts selectors look at that pci.Device lacks.
type candidate struct {
	dev       *pci.Device
	pfNetdev  string
	acpiIndex string
	rdma      bool
	vdpa      []pci.VdpaDevice // read only when a selector asks for a vdpaType
	pkey      int              // port 1's partition key at index 0, -1 none; read only for pKeys
	aux       *pci.AuxDevice   // auxNetDevice candidates
}

// Discover returns the members of every pool, keyed by the pool's FullName. A device that
// two pools select is an error naming both pools: the config is ambiguous.
func (d *Discoverer) Discover(c *Config) (map[string][]*Device, error) {
	out := map[string][]*Device{}
	var pciPools, auxPools []*Pool
	wantVdpa, wantPKey := false, false
	for i := range c.ResourceList {
		p := &c.ResourceList[i]
		switch p.DeviceType {
		case TypeVhostUser:
			out[p.FullName()] = vhostSlots(p)
			continue
		case TypeAuxNetDevice:
			auxPools = append(auxPools, p)
		default:
			pciPools = append(pciPools, p)
		}
		out[p.FullName()] = nil
		for _, s := range p.Selectors {
			wantVdpa = wantVdpa || s.VdpaType != ""
			wantPKey = wantPKey || len(s.PKeys) > 0
		}
	}
	if len(pciPools) > 0 {
		cands, err := d.candidates()
		if err != nil {
			return nil, err
		}
		for _, cd := range cands {
			if wantVdpa {
				if cd.vdpa, err = d.Sys.VdpaDevices(cd.dev.Address); err != nil {
					return nil, err
				}
			}
			if wantPKey {
				cd.pkey = d.Sys.PKey(cd.dev.Address)
			}
		}
		if err := assign(cands, pciPools, out); err != nil {
			return nil, err
		}
	}
	if len(auxPools) > 0 {
		cands, err := d.auxCandidates()
		if err != nil {
			return nil, err
		}
		if err := assign(cands, auxPools, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// assign gives each candidate to the one pool whose selectors take it.
func assign(cands []*candidate, pools []*Pool, out map[string][]*Device) error {
	for _, cd := range cands {
		var owner *Pool
		for _, p := range pools {
			if p.DeviceType != TypeAuxNetDevice && !strings.HasPrefix(cd.dev.Class, classFor[p.DeviceType]) {
				continue
			}
			sel := p.match(cd)
			if sel == nil {
				continue
			}
			id := cd.dev.Address
			if cd.aux != nil {
				id = cd.aux.Name
			}
			if owner != nil {
				return fmt.Errorf("device %s is selected by two pools, %s and %s: make their selectors disjoint", id, owner.FullName(), p.FullName())
			}
			owner = p
			dev := &Device{ID: id, PCI: cd.dev, PFNetdev: cd.pfNetdev, VhostNet: sel.NeedVhostNet, RDMA: sel.IsRdma && cd.rdma, Aux: cd.aux}
			if sel.VdpaType != "" {
				dev.Vdpa = vdpaOfType(cd.vdpa, sel.VdpaType)
			}
			out[p.FullName()] = append(out[p.FullName()], dev)
		}
	}
	return nil
}

func vdpaOfType(list []pci.VdpaDevice, typ string) *pci.VdpaDevice {
	for i := range list {
		if list[i].Type() == typ {
			return &list[i]
		}
	}
	return nil
}

// auxCandidates are the auxiliary devices of network PCI functions, each seen as selectors see
// it: the parent's vendor, device and driver, the parent as its root device and PF (its netdev
// as pfName), the subfunction number as its index, its own netdev's link type and RDMA.
func (d *Discoverer) auxCandidates() ([]*candidate, error) {
	parents, err := d.Sys.Scan("0x02")
	if err != nil {
		return nil, err
	}
	var out []*candidate
	for i := range parents {
		par := &parents[i]
		auxs, err := d.Sys.AuxDevices(par.Address)
		if err != nil {
			return nil, err
		}
		for j := range auxs {
			a := &auxs[j]
			dev := *par
			dev.Netdevs, dev.Netdev, dev.LinkType = a.Netdevs, "", d.Sys.AuxLinkType(a)
			if len(a.Netdevs) > 0 {
				dev.Netdev = a.Netdevs[0]
			}
			dev.PFAddress, dev.VFIndex = par.Address, a.SFNum
			out = append(out, &candidate{dev: &dev, pfNetdev: par.Netdev, rdma: a.RDMA, aux: a})
		}
	}
	return out, nil
}

// match returns the first selector of the pool that takes the device, nil when none does.
func (p *Pool) match(c *candidate) *Selector {
	for i := range p.Selectors {
		if p.Selectors[i].matches(c) {
			return &p.Selectors[i]
		}
	}
	return nil
}

func (d *Discoverer) candidates() ([]*candidate, error) {
	sys := d.Sys
	uplinks, err := d.defaultRouteLinks()
	if err != nil {
		return nil, fmt.Errorf("find the host's default-route interfaces: %w", err)
	}
	devs, err := sys.Scan("0x02", "0x12")
	if err != nil {
		return nil, err
	}
	netdevOf := map[string]string{}
	for i := range devs {
		netdevOf[devs[i].Address] = devs[i].Netdev
	}
	devDir := sys.DevicesDir()
	out := make([]*candidate, 0, len(devs))
	for i := range devs {
		dev := &devs[i]
		// A PF with VFs feeds them; handing the PF itself to a pod would cut them off.
		if dev.IsPF() && dev.NumVFs > 0 {
			continue
		}
		if hasAny(dev.Netdevs, uplinks) {
			continue
		}
		c := &candidate{dev: dev}
		if dev.PFAddress != "" {
			nd, ok := netdevOf[dev.PFAddress]
			if !ok {
				if nds, _ := sys.Netdevs(dev.PFAddress); len(nds) > 0 {
					nd = nds[0]
				}
			}
			c.pfNetdev = nd
		}
		if b, err := os.ReadFile(filepath.Join(devDir, dev.Address, "acpi_index")); err == nil {
			c.acpiIndex = strings.TrimSpace(string(b))
		}
		if _, err := os.Stat(filepath.Join(devDir, dev.Address, "infiniband")); err == nil {
			c.rdma = true
		}
		out = append(out, c)
	}
	return out, nil
}

func hasAny(list []string, set map[string]bool) bool {
	for _, s := range list {
		if set[s] {
			return true
		}
	}
	return false
}

func (d *Discoverer) defaultRouteLinks() (map[string]bool, error) {
	f := d.DefaultRouteLinks
	if f == nil {
		f = HostDefaultRouteLinks
	}
	names, err := f()
	if err != nil {
		return nil, err
	}
	set := map[string]bool{}
	for _, n := range names {
		set[n] = true
	}
	return set, nil
}

// HostDefaultRouteLinks returns the interfaces of this network namespace's default routes,
// IPv4 and IPv6 (main table, multipath next hops included), and the links under them: the
// ports of a bond or bridge that carries a default route and the parent of a VLAN or
// macvlan on one. Those carry the node's traffic too; a pod given one cuts the node off.
func HostDefaultRouteLinks() ([]string, error) {
	routes, err := netlinksafe.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	links, err := netlinksafe.LinkList()
	if err != nil {
		return nil, err
	}
	byIndex := map[int]netlink.Link{}
	ports := map[int][]int{} // master index -> its ports
	for _, l := range links {
		a := l.Attrs()
		byIndex[a.Index] = l
		if a.MasterIndex != 0 {
			ports[a.MasterIndex] = append(ports[a.MasterIndex], a.Index)
		}
	}
	var queue []int
	for _, r := range routes {
		if r.Dst != nil && maskBits(r.Dst) != 0 {
			continue
		}
		if r.LinkIndex > 0 {
			queue = append(queue, r.LinkIndex)
		}
		for _, nh := range r.MultiPath {
			queue = append(queue, nh.LinkIndex)
		}
	}
	seen := map[int]bool{}
	var names []string
	for len(queue) > 0 {
		idx := queue[0]
		queue = queue[1:]
		l := byIndex[idx]
		if seen[idx] || l == nil {
			continue
		}
		seen[idx] = true
		names = append(names, l.Attrs().Name)
		queue = append(queue, ports[idx]...)
		switch l.(type) {
		case *netlink.Vlan, *netlink.Macvlan, *netlink.Macvtap, *netlink.IPVlan:
			// Their parent index is the lower device in this namespace (a veth's is its peer).
			if pi := l.Attrs().ParentIndex; pi > 0 && l.Attrs().NetNsID < 0 {
				queue = append(queue, pi)
			}
		}
	}
	return names, nil
}

func maskBits(n *net.IPNet) int {
	ones, _ := n.Mask.Size()
	return ones
}

func (s *Selector) matches(c *candidate) bool {
	d := c.dev
	if len(s.Vendors) > 0 && !containsFold(s.Vendors, d.Vendor) {
		return false
	}
	if len(s.Devices) > 0 && !containsFold(s.Devices, d.DeviceID) {
		return false
	}
	if len(s.Drivers) > 0 && !contains(s.Drivers, d.Driver) {
		return false
	}
	if len(s.PCIAddresses) > 0 && !containsFold(s.PCIAddresses, d.Address) {
		return false
	}
	if len(s.LinkTypes) > 0 && !containsFold(s.LinkTypes, d.LinkType) {
		return false
	}
	if len(s.ACPIIndexes) > 0 && (c.acpiIndex == "" || !contains(s.ACPIIndexes, c.acpiIndex)) {
		return false
	}
	if s.IsRdma && !c.rdma {
		return false
	}
	if len(s.pkeys) > 0 && (c.pkey < 0 || !slices.Contains(s.pkeys, uint16(c.pkey))) {
		return false
	}
	if s.VdpaType != "" && vdpaOfType(c.vdpa, s.VdpaType) == nil {
		return false
	}
	if len(s.AuxTypes) > 0 && (c.aux == nil || !contains(s.AuxTypes, c.aux.Type)) {
		return false
	}
	if len(s.pfNames) > 0 && !s.matchPFName(c) {
		return false
	}
	if len(s.rootDevices) > 0 && !s.matchRoot(c) {
		return false
	}
	return true
}

// matchPFName: a VF matches by its PF's netdev and its index; any other device by its own
// netdev, and only an entry without a VF range.
func (s *Selector) matchPFName(c *candidate) bool {
	for _, r := range s.pfNames {
		if c.dev.IsVF() {
			if strings.EqualFold(c.pfNetdev, r.pf) && r.allows(c.dev.VFIndex) {
				return true
			}
			continue
		}
		if r.indexes == nil && containsFold(c.dev.Netdevs, r.pf) {
			return true
		}
	}
	return false
}

func (s *Selector) matchRoot(c *candidate) bool {
	for _, r := range s.rootDevices {
		if c.dev.IsVF() {
			if strings.EqualFold(c.dev.PFAddress, r.pf) && r.allows(c.dev.VFIndex) {
				return true
			}
			continue
		}
		if r.indexes == nil && strings.EqualFold(c.dev.Address, r.pf) {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// vhostSlots lays out a vhostUser pool's slots; nothing is created on the host here.
func vhostSlots(p *Pool) []*Device {
	v := p.VhostUser
	out := make([]*Device, 0, v.Count)
	for i := 0; i < v.Count; i++ {
		id := fmt.Sprintf("%s-%d", p.ResourceName, i)
		s := &Slot{Mode: v.Mode, HostDir: filepath.Join(v.Dir, id), ContainerDir: filepath.Join(v.ContainerDir, id)}
		s.HostSocket = filepath.Join(s.HostDir, v.SocketName)
		s.ContainerSocket = filepath.Join(s.ContainerDir, v.SocketName)
		out = append(out, &Device{ID: id, Slot: s})
	}
	return out
}
