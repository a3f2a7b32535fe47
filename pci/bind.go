package pci

import (
	"fmt"
	"log/slog"
	"os"
	"time"
)

// bindSettle bounds how long we wait for a probe to show in sysfs. PCI probing is normally
// synchronous with the drivers_probe write; the wait covers drivers that probe asynchronously.
var bindSettle = 3 * time.Second

// DriverLoaded reports whether the kernel has the PCI driver registered.
func (s *SysFS) DriverLoaded(driver string) bool {
	_, err := os.Stat(s.path("bus", "pci", "drivers", driver))
	return err == nil
}

// Bind binds the device to driver: driver_override, unbind from the current driver, then
// drivers_probe. The override is kept so a later re-probe (a PF reset, a rescan) lands on the
// same driver; BindDefault clears it. On failure the device is returned to its previous driver.
func (s *SysFS) Bind(addr, driver string) error {
	if err := s.mustExist(addr); err != nil {
		return err
	}
	if driver == "" {
		return fmt.Errorf("pci %s: bind: empty driver name", addr)
	}
	cur, err := s.Driver(addr)
	if err != nil {
		return err
	}
	if cur == driver {
		return nil
	}
	if !s.DriverLoaded(driver) {
		return fmt.Errorf("pci %s: bind to %s: driver %s is not loaded (no %s); load its module first",
			addr, driver, driver, s.path("bus", "pci", "drivers", driver))
	}
	origOverride := s.override(addr)
	if err := s.rebind(addr, driver); err != nil {
		if rerr := s.rebind(addr, origOverride); rerr != nil && cur != "" {
			slog.Warn("restore driver after failed bind", "pci", addr, "driver", cur, "err", rerr)
		}
		return fmt.Errorf("pci %s: bind to %s (was %s): %w", addr, driver, orNone(cur), err)
	}
	return nil
}

// BindDefault clears driver_override and lets the kernel pick the device's default driver
// (the netdev driver for a NIC VF). It reports an error when no driver takes the device.
func (s *SysFS) BindDefault(addr string) error {
	if err := s.mustExist(addr); err != nil {
		return err
	}
	cur, err := s.Driver(addr)
	if err != nil {
		return err
	}
	if cur != "" && s.override(addr) == "" {
		return nil // already on a driver the kernel chose
	}
	if err := s.rebind(addr, ""); err != nil {
		return fmt.Errorf("pci %s: bind to default driver (was %s): %w", addr, orNone(cur), err)
	}
	return nil
}

// rebind sets the override (empty clears it), unbinds and probes, then checks the outcome.
func (s *SysFS) rebind(addr, driver string) error {
	// A newline clears driver_override; the kernel rejects a zero-length write on some versions.
	ov := driver
	if ov == "" {
		ov = "\n"
	}
	if err := writeSysfs(s.devPath(addr, "driver_override"), ov); err != nil {
		return fmt.Errorf("write driver_override: %w", err)
	}
	if cur, _ := s.Driver(addr); cur != "" {
		if err := writeSysfs(s.devPath(addr, "driver", "unbind"), addr); err != nil {
			return fmt.Errorf("unbind from %s: %w", cur, err)
		}
		if err := s.waitDriver(addr, func(d string) bool { return d == "" }); err != nil {
			return fmt.Errorf("unbind from %s did not take: %w", cur, err)
		}
	}
	if err := writeSysfs(s.path("bus", "pci", "drivers_probe"), addr); err != nil {
		return fmt.Errorf("drivers_probe: %w", err)
	}
	err := s.waitDriver(addr, func(got string) bool { return (driver == "" && got != "") || (driver != "" && got == driver) })
	if err != nil && driver == "" {
		return fmt.Errorf("no driver took the device after probe")
	}
	if err != nil {
		return fmt.Errorf("bind did not take: %w", err)
	}
	return nil
}

// waitDriver polls the driver link until ok accepts it or bindSettle passes.
func (s *SysFS) waitDriver(addr string, ok func(driver string) bool) error {
	deadline := time.Now().Add(bindSettle)
	for {
		got, err := s.Driver(addr)
		if err != nil {
			return err
		}
		if ok(got) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("driver is %s after %s", orNone(got), bindSettle)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// override returns the device's driver_override, "" when none is set.
func (s *SysFS) override(addr string) string {
	v, _ := readTrimmed(s.devPath(addr, "driver_override"))
	if v == "(null)" {
		return ""
	}
	return v
}

func orNone(driver string) string {
	if driver == "" {
		return "(none)"
	}
	return driver
}
