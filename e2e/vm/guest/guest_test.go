//go:build e2e_vm

// Package guest holds tests that run inside the QEMU guest of e2e/vm, on a real kernel driving
// emulated Intel 82576 (igb) NICs with real SR-IOV VFs. Writing one is writing a Go test in a
// file with the e2e_vm build tag; `make e2e-vm` builds, boots and reports it.
package guest

import (
	"encoding/json"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/vfmanager"
)

// The guest's two igb PFs sit at fixed slots (see the runner's QEMU command line).
const (
	pf1 = "0000:00:02.0"
	pf2 = "0000:00:04.0"
)

func inGuest(t *testing.T) {
	t.Helper()
	if os.Getenv("MULTINET_E2E_GUEST") != "1" {
		t.Skip("runs only inside the e2e/vm guest (make e2e-vm)")
	}
}

func ctl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("/bin/multinetctl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("multinetctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func devices(t *testing.T) map[string]pci.Device {
	t.Helper()
	var list []pci.Device
	if err := json.Unmarshal([]byte(ctl(t, "devices", "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	m := map[string]pci.Device{}
	for _, d := range list {
		m[d.Address] = d
	}
	return m
}

// withVFs makes the PF carry n VFs on their netdev driver for the test, and none after it.
func withVFs(t *testing.T, pf string, n int) (*vfmanager.Manager, []string) {
	t.Helper()
	m := vfmanager.New(pci.New("/sys"))
	if err := m.SetNumVFs(pf, 0, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := m.SetNumVFs(pf, n, time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.SetNumVFs(pf, 0, time.Minute); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	vfs, err := m.Sys.VFs(pf)
	if err != nil {
		t.Fatal(err)
	}
	return m, vfs
}

func pfNetdev(t *testing.T, pf string) string {
	t.Helper()
	nds, err := pci.New("/sys").Netdevs(pf)
	if err != nil || len(nds) == 0 {
		t.Fatalf("pf %s has no netdev: %v", pf, err)
	}
	return nds[0]
}

func TestDiscoverIgbPFs(t *testing.T) {
	inGuest(t)
	devs := devices(t)
	for _, a := range []string{pf1, pf2} {
		d, ok := devs[a]
		if !ok {
			t.Fatalf("multinetctl devices does not list PF %s: %v", a, devs)
		}
		if d.Vendor != "8086" || d.DeviceID != "10c9" || d.Driver != "igb" || d.Netdev == "" {
			t.Errorf("PF %s = %+v, want 8086:10c9 on igb with a netdev", a, d)
		}
		if d.TotalVFs != 7 || d.NumVFs != 0 || d.VFIndex != -1 || d.PFAddress != "" {
			t.Errorf("PF %s SR-IOV fields = total %d num %d index %d pf %q", a, d.TotalVFs, d.NumVFs, d.VFIndex, d.PFAddress)
		}
		if d.IOMMUGroup < 0 {
			t.Errorf("PF %s has no IOMMU group: intel-iommu not active", a)
		}
	}
}

func TestNodePolicyTwoPFs(t *testing.T) {
	inGuest(t)
	policy := func(pf1VFs, vfioRange string) string {
		return "pfs:\n- pf: " + pfNetdev(t, pf1) + "\n  numVfs: " + pf1VFs + "\n  groups:\n  - {vfs: \"0-1\", driver: netdev}\n  - {vfs: \"" + vfioRange + "\", driver: vfio-pci}\n- pf: \"" + pf2 + "\"\n  numVfs: 2\n"
	}
	write := func(s string) string {
		f := "/tmp/policy.yaml"
		if err := os.WriteFile(f, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return f
	}
	m := vfmanager.New(pci.New("/sys"))
	t.Cleanup(func() {
		m.SetNumVFs(pf1, 0, time.Minute)
		m.SetNumVFs(pf2, 0, time.Minute)
	})

	out := ctl(t, "vf", "apply", "-f", write(policy("4", "2-3")))
	t.Logf("first apply:\n%s", out)
	for _, want := range []string{"numVfs 0 -> 4", "vf 2 (0000:00:12.", "-> vfio-pci", "numVfs 0 -> 2"} {
		if !strings.Contains(out, want) {
			t.Errorf("first apply output lacks %q", want)
		}
	}
	devs := devices(t)
	pf := devs[pf1]
	if pf.NumVFs != 4 || len(pf.VFs) != 4 {
		t.Fatalf("PF1 after apply: %+v", pf)
	}
	for i, a := range pf.VFs {
		vf := devs[a]
		if vf.Vendor != "8086" || vf.DeviceID != "10ca" || vf.PFAddress != pf1 || vf.VFIndex != i || vf.IOMMUGroup < 0 {
			t.Errorf("VF %d = %+v", i, vf)
		}
		if i < 2 && (vf.Driver != "igbvf" || vf.Netdev == "") {
			t.Errorf("VF %d: driver %q netdev %q, want igbvf with a netdev", i, vf.Driver, vf.Netdev)
		}
		if i >= 2 {
			if vf.Driver != "vfio-pci" || vf.Netdev != "" {
				t.Errorf("VF %d: driver %q netdev %q, want vfio-pci without netdev", i, vf.Driver, vf.Netdev)
			}
			if _, err := os.Stat("/dev/vfio/" + strconv.Itoa(vf.IOMMUGroup)); err != nil {
				t.Errorf("VF %d on vfio-pci: %v", i, err)
			}
		}
	}
	if devs[pf2].NumVFs != 2 {
		t.Errorf("PF2 numVfs = %d", devs[pf2].NumVFs)
	}

	if out := ctl(t, "vf", "apply", "-f", write(policy("4", "2-3"))); strings.TrimSpace(out) != "no change" {
		t.Errorf("second apply printed %q, want no change", out)
	}

	out = ctl(t, "vf", "apply", "-f", write(policy("3", "2")))
	t.Logf("shrink apply:\n%s", out)
	if !strings.Contains(out, "numVfs 4 -> 3") {
		t.Errorf("shrink output lacks numVfs 4 -> 3")
	}
	devs = devices(t)
	if got := devs[pf1]; got.NumVFs != 3 || devs[got.VFs[2]].Driver != "vfio-pci" || devs[got.VFs[0]].Driver != "igbvf" {
		t.Errorf("after shrink: PF1 %+v, VF2 driver %q", got, devs[got.VFs[2]].Driver)
	}
}

func TestVFIOBindAndBack(t *testing.T) {
	inGuest(t)
	m, vfs := withVFs(t, pf1, 2)
	vf := vfs[1]
	if err := m.Sys.Bind(vf, "vfio-pci"); err != nil {
		t.Fatal(err)
	}
	path, err := m.Sys.VFIODevicePath(vf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("after bind to vfio-pci: %v", err)
	}
	if _, err := os.Stat("/dev/vfio/vfio"); err != nil {
		t.Errorf("vfio container node: %v", err)
	}
	if nds, _ := m.Sys.Netdevs(vf); len(nds) != 0 {
		t.Errorf("VF on vfio-pci still has netdevs %v", nds)
	}
	if err := m.Sys.BindDefault(vf); err != nil {
		t.Fatal(err)
	}
	d, err := m.Sys.Device(vf)
	if err != nil {
		t.Fatal(err)
	}
	if d.Driver != "igbvf" || d.Netdev == "" {
		t.Errorf("after bind back: driver %q netdev %q, want igbvf with a netdev", d.Driver, d.Netdev)
	}
}
