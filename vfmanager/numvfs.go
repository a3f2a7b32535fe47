package vfmanager

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// DefaultVFWait bounds how long SetNumVFs waits for the kernel to publish VFs. Most NICs take
// well under a second; some firmware takes tens of seconds.
const DefaultVFWait = 60 * time.Second

// SetNumVFs sets the PF's VF count and waits until every VF has its virtfn link and, when it
// is bound to a netdev driver, its netdev. The kernel refuses to change a non-zero count
// directly, so the count goes through 0 first.
func (m *Manager) SetNumVFs(pfAddr string, n int, timeout time.Duration) error {
	d, err := m.Sys.Device(pfAddr)
	if err != nil {
		return err
	}
	if d.TotalVFs == 0 {
		return fmt.Errorf("pf %s: not SR-IOV capable (no sriov_totalvfs)", pfAddr)
	}
	if n < 0 || n > d.TotalVFs {
		return fmt.Errorf("pf %s: %d VFs requested, the device supports 0-%d", pfAddr, n, d.TotalVFs)
	}
	if d.NumVFs == n {
		return nil
	}
	file := m.Sys.DevicePath(pfAddr, "sriov_numvfs")
	if timeout <= 0 {
		timeout = DefaultVFWait
	}
	if d.NumVFs != 0 {
		if err := os.WriteFile(file, []byte("0"), 0); err != nil {
			return fmt.Errorf("pf %s: write sriov_numvfs 0: %w", pfAddr, err)
		}
		// The old VFs gone before new ones are asked for: a wait for n VFs that started while
		// the old ones were still being removed would count those.
		if err := m.waitVFs(pfAddr, 0, timeout); err != nil {
			return err
		}
	}
	if n > 0 {
		if err := os.WriteFile(file, []byte(strconv.Itoa(n)), 0); err != nil {
			return fmt.Errorf("pf %s: write sriov_numvfs %d: %w", pfAddr, n, err)
		}
	}
	return m.waitVFs(pfAddr, n, timeout)
}

func (m *Manager) waitVFs(pfAddr string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		missing := m.missingVFs(pfAddr, n)
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pf %s: %d VFs not ready after %s: %s", pfAddr, n, timeout, strings.Join(missing, "; "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// missingVFs lists what is not there yet, for the timeout error.
func (m *Manager) missingVFs(pfAddr string, n int) []string {
	var missing []string
	vfs, err := m.Sys.VFs(pfAddr)
	if err != nil {
		return []string{err.Error()}
	}
	if len(vfs) != n {
		return []string{fmt.Sprintf("%d virtfn links, want %d", len(vfs), n)}
	}
	for i, a := range vfs {
		if !m.Sys.IsVF(a) {
			missing = append(missing, fmt.Sprintf("vf %d (%s) has no physfn link", i, a))
			continue
		}
		drv, _ := m.Sys.Driver(a)
		if drv == "" {
			continue // no driver autoprobed (e.g. sriov_drivers_autoprobe=0): nothing to wait for
		}
		if drv != "vfio-pci" {
			if nds, _ := m.Sys.Netdevs(a); len(nds) == 0 {
				missing = append(missing, fmt.Sprintf("vf %d (%s) on %s has no netdev yet", i, a, drv))
			}
		}
	}
	return missing
}
