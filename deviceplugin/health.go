package deviceplugin

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/multinet-io/multinet/pci"
)

// nodeState is one look at the device tree, shared by the change detection and every health
// check of a tick so that each sysfs file is read once per tick, not once per pool member.
type nodeState struct {
	sys     *pci.SysFS
	drivers map[string]string // address -> bound driver ("" unbound); absent: not read yet
	gone    map[string]bool
	oper    map[string]string // "<pf>/<netdev>" -> operstate
}

func newNodeState(sys *pci.SysFS) *nodeState {
	return &nodeState{sys: sys, drivers: map[string]string{}, gone: map[string]bool{}, oper: map[string]string{}}
}

// driver returns the device's driver and whether the device exists.
func (n *nodeState) driver(addr string) (string, bool) {
	if drv, ok := n.drivers[addr]; ok {
		return drv, true
	}
	if n.gone[addr] {
		return "", false
	}
	link := n.sys.DevicePath(addr)
	if _, err := os.Stat(link); err != nil {
		n.gone[addr] = true
		return "", false
	}
	drv, _ := os.Readlink(filepath.Join(link, "driver"))
	if drv != "" {
		drv = filepath.Base(drv)
	}
	n.drivers[addr] = drv
	return drv, true
}

// operState reads the netdev's RFC 2863 operstate, "" when unreadable (a PF netdev may be
// renamed or moved; that alone does not make its VFs unusable).
func (n *nodeState) operState(addr, netdev string) string {
	key := addr + "/" + netdev
	if st, ok := n.oper[key]; ok {
		return st
	}
	b, _ := os.ReadFile(n.sys.DevicePath(addr, "net", netdev, "operstate"))
	st := strings.TrimSpace(string(b))
	n.oper[key] = st
	return st
}

// checkHealth compares a device with what discovery saw. It returns "" when the device is fine
// and otherwise why it is not, for the log. inUse devices are allocated to a pod: their netdev
// lives in the pod's network namespace, so its absence from the host's sysfs is expected.
func checkHealth(n *nodeState, d *Device, inUse bool) string {
	if d.Slot != nil {
		if fi, err := os.Stat(d.Slot.HostDir); err != nil || !fi.IsDir() {
			return "slot directory " + d.Slot.HostDir + " is missing"
		}
		return ""
	}
	if d.Aux != nil {
		dir := filepath.Join(n.sys.Root, "bus", "auxiliary", "devices", d.ID)
		if _, err := os.Stat(dir); err != nil {
			return "device is gone from the auxiliary bus"
		}
		if drv, _ := os.Readlink(filepath.Join(dir, "driver")); filepath.Base(drv) != d.Aux.Driver {
			return "driver changed from " + d.Aux.Driver + " to " + filepath.Base(drv)
		}
		return ""
	}
	drv, ok := n.driver(d.ID)
	if !ok {
		return "device is gone from the PCI bus"
	}
	if drv == "" {
		return "no driver bound (was " + d.PCI.Driver + ")"
	}
	if drv != d.PCI.Driver {
		return "driver changed from " + d.PCI.Driver + " to " + drv
	}
	if !inUse && len(d.PCI.Netdevs) > 0 {
		// The common case costs one lstat (this runs for every VF every tick). A renamed netdev
		// (udev renames new VFs' eth<N> a moment after they appear) is not a lost one.
		if _, err := os.Lstat(n.sys.DevicePath(d.ID, "net", d.PCI.Netdevs[0])); err != nil {
			if now, _ := n.sys.Netdevs(d.ID); len(now) == 0 {
				return "netdev " + d.PCI.Netdevs[0] + " vanished"
			}
		}
	}
	if d.PCI.PFAddress != "" && d.PFNetdev != "" {
		if st := n.operState(d.PCI.PFAddress, d.PFNetdev); st == "down" || st == "lowerlayerdown" || st == "notpresent" {
			return "PF " + d.PCI.PFAddress + " link " + d.PFNetdev + " is " + st
		}
	}
	return ""
}
