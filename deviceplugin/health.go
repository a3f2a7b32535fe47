package deviceplugin

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/multinet-io/multinet/pci"
)

// checkHealth compares a device with what discovery saw. It returns "" when the device is fine
// and otherwise why it is not, for the log. inUse devices are allocated to a pod: their netdev
// lives in the pod's network namespace, so its absence from the host's sysfs is expected.
func checkHealth(sys *pci.SysFS, d *Device, inUse bool) string {
	if d.Slot != nil {
		if fi, err := os.Stat(d.Slot.HostDir); err != nil || !fi.IsDir() {
			return "slot directory " + d.Slot.HostDir + " is missing"
		}
		return ""
	}
	if !sys.Exists(d.ID) {
		return "device is gone from the PCI bus"
	}
	drv, err := sys.Driver(d.ID)
	if err != nil {
		return err.Error()
	}
	if drv == "" {
		return "no driver bound (was " + d.PCI.Driver + ")"
	}
	if drv != d.PCI.Driver {
		return "driver changed from " + d.PCI.Driver + " to " + drv
	}
	if !inUse && len(d.PCI.Netdevs) > 0 {
		now, _ := sys.Netdevs(d.ID)
		for _, want := range d.PCI.Netdevs {
			if !contains(now, want) {
				return "netdev " + want + " vanished"
			}
		}
	}
	if d.PCI.PFAddress != "" && d.PFNetdev != "" {
		if st := operState(sys, d.PCI.PFAddress, d.PFNetdev); st == "down" || st == "lowerlayerdown" || st == "notpresent" {
			return "PF " + d.PCI.PFAddress + " link " + d.PFNetdev + " is " + st
		}
	}
	return ""
}

// operState reads the netdev's RFC 2863 operstate from sysfs, "" when unreadable (a PF netdev
// may be renamed or moved; that alone does not make its VFs unusable).
func operState(sys *pci.SysFS, addr, netdev string) string {
	b, err := os.ReadFile(filepath.Join(sys.Root, "bus", "pci", "devices", addr, "net", netdev, "operstate"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
