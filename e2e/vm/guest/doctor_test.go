//go:build e2e_vm

package guest

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/multinet-io/multinet/vfmanager"
)

// doctor runs `multinetctl doctor` over empty state dirs and returns its JSON report and exit code.
func doctor(t *testing.T, extra ...string) (findings []map[string]string, code int) {
	t.Helper()
	d := t.TempDir()
	args := append([]string{"doctor", "-o", "json", "--state-dir", filepath.Join(d, "sriov"), "--cache-dir", filepath.Join(d, "meta"),
		"--ipam-dirs", filepath.Join(d, "ipam"), "--checkpoint", filepath.Join(d, "checkpoint")}, extra...)
	out, err := exec.Command("/bin/multinetctl", args...).Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Findings []map[string]string `json:"findings"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("doctor output: %v\n%s", err, out)
	}
	return r.Findings, code
}

// doctor on real igb VFs: a free VF a pod left with its VLAN and trust is reported (read from
// the PF's VF list) and reset by --fix, the other VF is not touched; a PF whose VF count differs
// from the node policy is reported and not changed.
func TestDoctorOnRealVFs(t *testing.T) {
	inGuest(t)
	m, vfs := withVFs(t, pf1, 2)
	pfnd := pfNetdev(t, pf1)
	vlan, on := 100, true
	if err := m.ApplyVF(pfnd, 1, vfmanager.VFConfig{VLAN: &vlan, Trust: &on}); err != nil {
		t.Fatal(err)
	}
	fs, code := doctor(t)
	if code != 1 || len(fs) != 1 || fs[0]["kind"] != "vf-settings" || fs[0]["subject"] != vfs[1] {
		t.Fatalf("doctor: exit %d, findings %v; want vf-settings of %s only", code, fs, vfs[1])
	}
	if _, code := doctor(t, "--fix"); code != 0 {
		t.Fatalf("doctor --fix: exit %d", code)
	}
	if got := vfInfo(t, pfnd, 1); got.Vlan != 0 || got.Trust != 0 {
		t.Errorf("after --fix: vf 1 vlan %d trust %d", got.Vlan, got.Trust)
	}
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(policy, []byte("pfs:\n- pf: \""+pf1+"\"\n  numVfs: 3\n"), 0o644)
	fs, code = doctor(t, "--policy", policy, "--fix")
	if code != 1 || len(fs) == 0 || fs[0]["kind"] != "policy-drift" || !strings.Contains(fs[0]["detail"], "numVfs 2 -> 3") {
		t.Fatalf("doctor --policy: exit %d, findings %v", code, fs)
	}
	if now, _ := m.Sys.VFs(pf1); len(now) != 2 {
		t.Errorf("doctor --fix changed the VF count to %d", len(now))
	}
}
