//go:build e2e_vm

package guest

import (
	"encoding/json"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/multinet-io/multinet/benchmarks"
	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/vfmanager"
)

// TestBenchOnRealPF runs `multinet-bench --pf` on the igb PF as a user runs it on a node: the
// VFs as the node policy left them (two netdev, one vfio-pci), measured with our sriov plugin
// and the floor, and every VF put back as found: driver, netdev name, the PF's VF settings.
func TestBenchOnRealPF(t *testing.T) {
	inGuest(t)
	pfnd := pfNetdev(t, pf1)
	m := vfmanager.New(pci.New("/sys"))
	t.Cleanup(func() {
		if err := m.SetNumVFs(pf1, 0, time.Minute); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	policy := "/tmp/bench-policy.yaml"
	if err := os.WriteFile(policy, []byte("pfs:\n- pf: "+pfnd+"\n  numVfs: 3\n  groups:\n  - {vfs: \"0-1\", driver: netdev}\n  - {vfs: \"2\", driver: vfio-pci}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctl(t, "vf", "apply", "-f", policy)
	pfUp(t, pf1)

	type vfSnap struct {
		driver, netdev string
		st             vfmanager.VFState
	}
	snap := func() []vfSnap {
		vfs, err := m.Sys.VFs(pf1)
		if err != nil {
			t.Fatal(err)
		}
		var out []vfSnap
		for i, a := range vfs {
			d, _ := m.Sys.Driver(a)
			nds, _ := m.Sys.Netdevs(a)
			st, err := m.ReadVF(pfnd, i)
			if err != nil {
				t.Fatal(err)
			}
			s := vfSnap{driver: d, st: st}
			if len(nds) == 1 {
				s.netdev = nds[0]
			}
			out = append(out, s)
		}
		return out
	}
	before := snap()
	if len(before) != 3 || before[0].netdev == "" || before[2].driver != "vfio-pci" {
		t.Fatalf("VFs after the policy: %+v", before)
	}

	const cycles = 6
	out, err := exec.Command("/bin/multinet-bench", "--pf", pfnd, "--bin-dir", "/bin", "--cycles", strconv.Itoa(cycles),
		"--multinet-version", "e2e-vm", "--out", "/tmp/bench-pf.json").CombinedOutput()
	t.Logf("multinet-bench --pf %s:\n%s", pfnd, out)
	if err != nil {
		t.Fatalf("multinet-bench --pf: %v", err)
	}
	b, err := os.ReadFile("/tmp/bench-pf.json")
	if err != nil {
		t.Fatal(err)
	}
	var rep benchmarks.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	got := map[string]benchmarks.ScenarioResult{}
	for _, s := range rep.Scenarios {
		got[s.Name+"/"+s.Stack] = s
	}
	for _, k := range []string{"pf-netdev-vf/sriov", "pf-netdev-vf/floor", "pf-vfio-vf/sriov", "pf-vfio-vf/floor"} {
		s, ok := got[k]
		if !ok {
			t.Errorf("report has no %s: %s", k, b)
			continue
		}
		if s.Count != cycles || s.DelCount != cycles || s.AddFailures+s.DelFailures+s.WrongAttach != 0 || s.AddP50 <= 0 {
			t.Errorf("%s: %+v", k, s)
		}
	}
	after := snap()
	for i := range before {
		if after[i] != before[i] {
			t.Errorf("VF %d after the bench %+v, before %+v", i, after[i], before[i])
		}
	}
}
