package pci_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/multinet-io/multinet/pci"
)

func TestBindToVFIOAndBack(t *testing.T) {
	tree := node(t)
	tree.AddDriver("vfio-pci")
	tree.StartKernel()
	s := pci.New(tree.Root)
	const vf = "0000:3b:02.0"

	if err := s.Bind(vf, "vfio-pci"); err != nil {
		t.Fatal(err)
	}
	d, _ := s.Device(vf)
	if d.Driver != "vfio-pci" || d.Netdev != "" {
		t.Fatalf("after bind: driver %q netdev %q", d.Driver, d.Netdev)
	}
	ov, _ := os.ReadFile(filepath.Join(tree.DevicePath(vf), "driver_override"))
	if strings.TrimSpace(string(ov)) != "vfio-pci" {
		t.Errorf("driver_override = %q, want vfio-pci kept", ov)
	}
	if err := s.BindDefault(vf); err != nil {
		t.Fatal(err)
	}
	d, _ = s.Device(vf)
	if d.Driver != "iavf" || d.Netdev != "ens1f0v0" {
		t.Fatalf("after default bind: driver %q netdev %q", d.Driver, d.Netdev)
	}
	ov, _ = os.ReadFile(filepath.Join(tree.DevicePath(vf), "driver_override"))
	if strings.TrimSpace(string(ov)) != "" {
		t.Errorf("driver_override not cleared: %q", ov)
	}
}

func TestBindIsNoOpWhenAlreadyBound(t *testing.T) {
	tree := node(t) // no kernel emulation: any write that needed one would fail the bind
	if err := pci.New(tree.Root).Bind("0000:3b:02.2", "vfio-pci"); err != nil {
		t.Fatal(err)
	}
	if err := pci.New(tree.Root).BindDefault("0000:3b:02.0"); err != nil {
		t.Fatal(err)
	}
}

func TestBindToDriverNotLoaded(t *testing.T) {
	tree := node(t)
	tree.StartKernel()
	err := pci.New(tree.Root).Bind("0000:3b:02.0", "igb_uio")
	if err == nil || !strings.Contains(err.Error(), "0000:3b:02.0") || !strings.Contains(err.Error(), "igb_uio is not loaded") {
		t.Fatalf("err = %v", err)
	}
}

func TestBindThatDoesNotTakeIsReportedAndUndone(t *testing.T) {
	tree := node(t)
	tree.AddDriver("vfio-pci")
	tree.StartKernel()
	tree.RefuseBind("0000:3b:02.1", "vfio-pci")
	s := pci.New(tree.Root)
	err := s.Bind("0000:3b:02.1", "vfio-pci")
	if err == nil || !strings.Contains(err.Error(), "bind did not take") {
		t.Fatalf("err = %v", err)
	}
	if drv, _ := s.Driver("0000:3b:02.1"); drv != "iavf" {
		t.Errorf("device left on %q after failed bind, want iavf restored", drv)
	}
}
