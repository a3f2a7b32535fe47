// Command demo runs multinetctl against a simulated SR-IOV node: a sysfs tree shaped like the
// kernel's with two igb-like PFs, whose VFs appear and change driver as a kernel would make
// them. It is what `make demo` shows in seconds on any machine.
package main

import (
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/multinet-io/multinet/pci/pcitest"
)

// tb lets pcitest build a tree outside `go test`.
type tb struct{ cleanups []func() }

func (*tb) Helper()                           {}
func (*tb) Fatalf(format string, args ...any) { log.Fatalf(format, args...) }
func (t *tb) Cleanup(f func())                { t.cleanups = append(t.cleanups, f) }
func (t *tb) TempDir() string {
	d, err := os.MkdirTemp("", "multinet-demo-")
	if err != nil {
		log.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

const policy = `# node policy: PF1 4 VFs (0-1 kernel netdevs, 2-3 vfio-pci for DPDK), PF2 2 VFs
pfs:
- pf: enp0s2
  numVfs: 4
  groups:
  - {vfs: "0-1", driver: netdev}
  - {vfs: "2-3", driver: vfio-pci}
- pf: "0000:00:04.0"
  numVfs: 2
`

func main() {
	bin := "bin/multinetctl"
	if len(os.Args) > 1 {
		bin = os.Args[1]
	}
	t := &tb{}
	defer func() {
		for i := len(t.cleanups) - 1; i >= 0; i-- {
			t.cleanups[i]()
		}
	}()
	tree := pcitest.New(t)
	tree.AddIgbPF("0000:00:02.0", "enp0s2", 0x12)
	tree.AddIgbPF("0000:00:04.0", "enp0s4", 0x14)
	tree.AddNIC(pcitest.NIC{Address: "0000:00:03.0", Vendor: "1af4", Device: "1041", Driver: "virtio-pci", Netdev: "eth0", IOMMUGroup: -1})
	tree.AddDriver("vfio-pci")
	tree.StartKernel()
	pfile := filepath.Join(tree.Root, "..", filepath.Base(tree.Root)+"-policy.yaml")
	if err := os.WriteFile(pfile, []byte(policy), 0o644); err != nil {
		log.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(pfile) })

	step := func(title string, args ...string) {
		fmt.Printf("\n### %s\n$ multinetctl %s\n", title, strings.Join(args, " "))
		cmd := exec.Command(bin, append(args, "--sysfs-root", tree.Root)...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
		if err := cmd.Run(); err != nil {
			fmt.Printf("(exit: %v)\n", err)
		}
	}
	fmt.Printf("simulated node: sysfs tree at %s\n", tree.Root)
	step("the node before any policy", "devices")
	fmt.Printf("\n### the node policy\n%s", policy)
	step("plan it", "vf", "apply", "-f", pfile, "--dry-run")
	step("apply it", "vf", "apply", "-f", pfile)
	step("apply it again: nothing to do", "vf", "apply", "-f", pfile)
	step("the node after the policy", "devices")
	step("as JSON (what scripts and the other components read)", "devices", "-o", "json")
	if err := podDemo(filepath.Dir(bin), tree.Root); err != nil {
		log.Fatalf("pod demo: %v", err)
	}
}
