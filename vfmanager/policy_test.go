package vfmanager_test

import (
	"strings"
	"testing"
	"time"

	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/pci/pcitest"
	"github.com/multinet-io/multinet/vfmanager"
)

// igbNode emulates a host with two igb PFs whose VFs appear when sriov_numvfs is written, on
// the igbvf driver with a netdev each, like the QEMU guest.
func igbNode(t *testing.T) (*pcitest.Tree, *vfmanager.Manager) {
	tree := pcitest.New(t)
	tree.AddIgbPF("0000:00:02.0", "enp0s2", 0x12)
	tree.AddIgbPF("0000:00:04.0", "enp0s4", 0x14)
	tree.AddDriver("vfio-pci")
	tree.StartKernel()
	return tree, vfmanager.New(pci.New(tree.Root))
}

const twoPFPolicy = `
pfs:
- pf: enp0s2
  numVfs: 4
  groups:
  - {vfs: "0-1", driver: netdev}
  - {vfs: "2-3", driver: vfio-pci}
- pf: "0000:00:04.0"
  numVfs: 2
`

func mustParse(t *testing.T, s string) *vfmanager.Policy {
	t.Helper()
	p, err := vfmanager.ParsePolicy([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func drivers(t *testing.T, s *pci.SysFS, pf string) []string {
	t.Helper()
	vfs, err := s.VFs(pf)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range vfs {
		d, _ := s.Driver(a)
		out = append(out, d)
	}
	return out
}

func TestApplyReconcilesIdempotently(t *testing.T) {
	_, m := igbNode(t)
	opt := vfmanager.ApplyOptions{VFWait: 5 * time.Second}

	changes, err := m.Apply(mustParse(t, twoPFPolicy), opt)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range changes {
		got = append(got, c.String())
	}
	want := []string{
		"pf 0000:00:02.0 (enp0s2): numVfs 0 -> 4",
		"pf 0000:00:02.0 (enp0s2): vf 2 (0000:00:12.2) driver igbvf -> vfio-pci",
		"pf 0000:00:02.0 (enp0s2): vf 3 (0000:00:12.3) driver igbvf -> vfio-pci",
		"pf 0000:00:04.0 (enp0s4): numVfs 0 -> 2",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if d := drivers(t, m.Sys, "0000:00:02.0"); strings.Join(d, ",") != "igbvf,igbvf,vfio-pci,vfio-pci" {
		t.Errorf("PF1 VF drivers = %v", d)
	}
	if d := drivers(t, m.Sys, "0000:00:04.0"); strings.Join(d, ",") != "igbvf,igbvf" {
		t.Errorf("PF2 VF drivers = %v", d)
	}

	again, err := m.Apply(mustParse(t, twoPFPolicy), opt)
	if err != nil || len(again) != 0 {
		t.Fatalf("second apply: %v, %v; want no change", again, err)
	}

	fewer := strings.Replace(twoPFPolicy, "numVfs: 4", "numVfs: 3", 1)
	fewer = strings.Replace(fewer, `"2-3"`, `"2"`, 1)
	changes, err = m.Apply(mustParse(t, fewer), opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) == 0 || changes[0].String() != "pf 0000:00:02.0 (enp0s2): numVfs 4 -> 3" {
		t.Fatalf("fewer VFs changes = %v", changes)
	}
	// Recreated VFs come back on igbvf; VF 2 must be moved to vfio-pci again.
	if d := drivers(t, m.Sys, "0000:00:02.0"); strings.Join(d, ",") != "igbvf,igbvf,vfio-pci" {
		t.Errorf("after shrink VF drivers = %v", d)
	}
}

func TestApplyBackToNetdev(t *testing.T) {
	_, m := igbNode(t)
	opt := vfmanager.ApplyOptions{VFWait: 5 * time.Second}
	if _, err := m.Apply(mustParse(t, twoPFPolicy), opt); err != nil {
		t.Fatal(err)
	}
	allNetdev := strings.Replace(twoPFPolicy, `driver: vfio-pci`, `driver: netdev`, 1)
	changes, err := m.Apply(mustParse(t, allNetdev), opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 2 || !strings.Contains(changes[0].String(), "vf 2 (0000:00:12.2) driver vfio-pci -> igbvf") {
		t.Fatalf("changes = %v", changes)
	}
	d, _ := m.Sys.Device("0000:00:12.2")
	if d.Netdev != "enp0s2v2" {
		t.Errorf("netdev after rebind = %q", d.Netdev)
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	_, m := igbNode(t)
	changes, err := m.Apply(mustParse(t, twoPFPolicy), vfmanager.ApplyOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 4 {
		t.Errorf("dry-run planned %d changes: %v", len(changes), changes)
	}
	if d, _ := m.Sys.Device("0000:00:02.0"); d.NumVFs != 0 {
		t.Errorf("dry run created %d VFs", d.NumVFs)
	}
}

func TestBadPoliciesChangeNothing(t *testing.T) {
	tree, m := igbNode(t)
	cases := map[string]string{
		"unknown pf":        "pfs:\n- pf: ens9f9\n  numVfs: 1\n",
		"beyond totalvfs":   "pfs:\n- pf: enp0s2\n  numVfs: 8\n",
		"range beyond":      "pfs:\n- pf: enp0s2\n  numVfs: 2\n  groups:\n  - {vfs: \"1-5\", driver: netdev}\n",
		"unknown driver":    "pfs:\n- pf: enp0s2\n  numVfs: 2\n  groups:\n  - {vfs: \"0\", driver: igb_uio}\n",
		"overlap":           "pfs:\n- pf: enp0s2\n  numVfs: 4\n  groups:\n  - {vfs: \"0-2\", driver: netdev}\n  - {vfs: \"2-3\", driver: vfio-pci}\n",
		"malformed yaml":    "pfs: [ {pf: enp0s2, numVfs: 2\n",
		"unknown field":     "pfs:\n- pf: enp0s2\n  vfCount: 2\n",
		"second pf unknown": "pfs:\n- pf: enp0s2\n  numVfs: 2\n- pf: 0000:00:09.0\n  numVfs: 1\n",
	}
	wantIn := map[string]string{
		"unknown pf": `unknown pf "ens9f9"`, "beyond totalvfs": "numVfs 8 beyond sriov_totalvfs 7",
		"range beyond": `vfs "1-5" beyond numVfs 2`, "unknown driver": `unknown driver "igb_uio"`,
		"overlap": "vf 2 in two groups", "malformed yaml": "policy:", "unknown field": "vfCount",
		"second pf unknown": "0000:00:09.0",
	}
	for name, doc := range cases {
		t.Run(name, func(t *testing.T) {
			var err error
			if p, perr := vfmanager.ParsePolicy([]byte(doc)); perr != nil {
				err = perr
			} else {
				_, err = m.Apply(p, vfmanager.ApplyOptions{})
			}
			if err == nil || !strings.Contains(err.Error(), wantIn[name]) {
				t.Fatalf("err = %v, want it to mention %q", err, wantIn[name])
			}
			if d, _ := pci.New(tree.Root).Device("0000:00:02.0"); d.NumVFs != 0 {
				t.Errorf("a bad policy created %d VFs", d.NumVFs)
			}
		})
	}
}

func TestVFIONotLoadedIsRefusedUpFront(t *testing.T) {
	tree := pcitest.New(t)
	tree.AddPF(pcitest.PF{Address: "0000:00:02.0", Vendor: "8086", Device: "10c9", Driver: "igb", Netdev: "enp0s2", TotalVFs: 7})
	m := vfmanager.New(pci.New(tree.Root))
	_, err := m.Apply(mustParse(t, "pfs:\n- pf: enp0s2\n  numVfs: 2\n  groups:\n  - {vfs: \"0\", driver: vfio-pci}\n"), vfmanager.ApplyOptions{})
	if err == nil || !strings.Contains(err.Error(), "vfio-pci driver is not loaded") {
		t.Fatalf("err = %v", err)
	}
}

func TestSetNumVFsTimeoutNamesWhatIsMissing(t *testing.T) {
	tree := pcitest.New(t) // no kernel emulation: the VFs never appear
	tree.AddPF(pcitest.PF{Address: "0000:00:02.0", Vendor: "8086", Device: "10c9", Driver: "igb", Netdev: "enp0s2", TotalVFs: 7})
	m := vfmanager.New(pci.New(tree.Root))
	err := m.SetNumVFs("0000:00:02.0", 2, 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "pf 0000:00:02.0: 2 VFs not ready after 100ms: 0 virtfn links, want 2") {
		t.Fatalf("err = %v", err)
	}
}

func TestParseRange(t *testing.T) {
	for in, want := range map[string][2]int{"0": {0, 0}, "0-3": {0, 3}, " 2 - 5 ": {2, 5}} {
		lo, hi, err := vfmanager.ParseRange(in)
		if err != nil || lo != want[0] || hi != want[1] {
			t.Errorf("ParseRange(%q) = %d, %d, %v", in, lo, hi, err)
		}
	}
	for _, bad := range []string{"", "3-1", "a", "-1", "1-", "1-2-3"} {
		if _, _, err := vfmanager.ParseRange(bad); err == nil {
			t.Errorf("ParseRange(%q) accepted", bad)
		}
	}
}

func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(twoPFPolicy))
	f.Add([]byte("pfs:\n- pf: x\n  numVfs: -1\n"))
	f.Add([]byte("pfs: []"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := vfmanager.ParsePolicy(data)
		if err != nil {
			return
		}
		// Whatever parses must be internally consistent: ranges valid, drivers known.
		for _, pf := range p.PFs {
			if pf.PF == "" || pf.NumVFs < 0 {
				t.Fatalf("accepted %+v", pf)
			}
			for _, g := range pf.Groups {
				if lo, hi, err := vfmanager.ParseRange(g.VFs); err != nil || lo > hi {
					t.Fatalf("accepted range %q", g.VFs)
				}
				if g.Driver != "netdev" && g.Driver != "vfio-pci" {
					t.Fatalf("accepted driver %q", g.Driver)
				}
			}
		}
	})
}
