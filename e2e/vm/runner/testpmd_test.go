package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The guest's testpmd tree is complete: the loader, run inside that tree alone, resolves every
// library of testpmd and of each PMD EAL will dlopen there.
func TestTestpmdTreeResolvesInChroot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chroot)")
	}
	if _, err := os.Stat(testpmd); err != nil {
		t.Skipf("%s not installed (e2e/vm/deps.sh installs it): %v", testpmd, err)
	}
	root := t.TempDir()
	// The guest keeps its modules in a real /lib, as buildInitramfs lays it out.
	if err := os.MkdirAll(filepath.Join(root, "lib/modules"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := addTestpmd(root); err != nil {
		t.Fatal(err)
	}
	for _, p := range dpdkPMDs {
		if _, err := os.Stat(filepath.Join(root, dpdkPMDir, p)); err != nil {
			t.Errorf("guest PMD dir: %v", err)
		}
	}
	// Everything there is dlopened by EAL: the selected PMDs and the drivers testpmd links.
	pmds, _ := filepath.Glob(filepath.Join(root, dpdkPMDir, "*.so*"))
	for _, f := range append([]string{testpmd}, pmds...) {
		f = strings.TrimPrefix(f, root)
		out, err := exec.Command("chroot", root, "/lib64/ld-linux-x86-64.so.2", "--list", f).CombinedOutput()
		if err != nil || strings.Contains(string(out), "not found") {
			t.Errorf("%s in the guest tree: %v\n%s", f, err, out)
		}
	}
	// One file per library: the PMD dir's names and the library dir's name for the PCI bus
	// reach the same inode, or EAL would register the bus twice.
	a, err := os.Stat(filepath.Join(root, dpdkPMDir, "librte_bus_pci.so.23"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.Stat(filepath.Join(root, "/usr/lib/x86_64-linux-gnu/librte_bus_pci.so.23"))
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(a, b) {
		t.Errorf("librte_bus_pci.so.23 is two files in the guest tree")
	}
}
