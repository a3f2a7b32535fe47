// Package pci reads the host's PCI and SR-IOV state from sysfs and binds devices to drivers.
//
// Every path is taken relative to a sysfs root (normally /sys), so the same code runs on a
// real host, inside a test VM and against a fake tree built by package pcitest.
package pci

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultSysfsRoot is where the kernel mounts sysfs.
const DefaultSysfsRoot = "/sys"

// EnvSysfsRoot names the environment variable the CNI plugins (which take no flags) read the
// sysfs root from, in cmd/: packages take the root as a value (New).
const EnvSysfsRoot = "MULTINET_SYSFS_ROOT"

// SysFS reads and writes sysfs below Root.
type SysFS struct {
	Root string
}

// New returns a SysFS rooted at root ("" means /sys).
func New(root string) *SysFS {
	if root == "" {
		root = DefaultSysfsRoot
	}
	return &SysFS{Root: root}
}

func (s *SysFS) path(elem ...string) string {
	return filepath.Join(append([]string{s.Root}, elem...)...)
}

// devPath is the device's directory as the kernel publishes it under bus/pci/devices.
func (s *SysFS) devPath(addr string, elem ...string) string {
	return s.path(append([]string{"bus", "pci", "devices", addr}, elem...)...)
}

func readTrimmed(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func readInt(path string) (int, error) {
	v, err := readTrimmed(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a number", path, v)
	}
	return n, nil
}

// linkBase returns the last element of a symlink's target, "" when the link does not exist.
func linkBase(path string) (string, error) {
	t, err := os.Readlink(path)
	if err != nil {
		if os.IsNotExist(err) {
			return "", nil
		}
		return "", err
	}
	return filepath.Base(t), nil
}

// writeSysfs writes one value the way `echo` does; sysfs takes a single write per open.
func writeSysfs(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(value); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// DriverVFIO is the kernel's VFIO PCI driver, the one a device is bound to for DPDK with an
// IOMMU.
const DriverVFIO = "vfio-pci"

// userspaceDrivers are the drivers through which DPDK drives a PCI device: a device bound to
// one has no kernel netdev.
var userspaceDrivers = map[string]bool{DriverVFIO: true, "uio_pci_generic": true, "igb_uio": true}

// UserspaceDriver reports whether driver is one DPDK drives a device through.
func UserspaceDriver(driver string) bool { return userspaceDrivers[driver] }

// DevicesDir is where the kernel lists PCI devices (bus/pci/devices under Root).
func (s *SysFS) DevicesDir() string { return s.path("bus", "pci", "devices") }

// DevicePath is the device's directory under DevicesDir, or elem below it.
func (s *SysFS) DevicePath(addr string, elem ...string) string { return s.devPath(addr, elem...) }
