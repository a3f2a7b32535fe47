package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// doctorArgs points doctor at a simulated node's sysfs and empty state directories.
func doctorArgs(t *testing.T, root string) (args []string, ipam string) {
	d := t.TempDir()
	ipam = filepath.Join(d, "ipam")
	return []string{"doctor", "--sysfs-root", root, "--state-dir", filepath.Join(d, "sriov"), "--cache-dir", filepath.Join(d, "meta"),
		"--ipam-dirs", ipam, "--checkpoint", filepath.Join(d, "checkpoint")}, ipam
}

// The exit code says whether anything is wrong; --fix --dry-run shows the repair and does
// nothing; --fix repairs, logs it and exits 0 when nothing is left.
func TestDoctorExitCodeAndFix(t *testing.T) {
	tree := simNode(t)
	args, ipam := doctorArgs(t, tree.Root)
	var out, errb bytes.Buffer
	if code := run(args, &out, &errb); code != 0 || !strings.Contains(out.String(), "nothing stale") {
		t.Fatalf("clean node: exit %d\n%s%s", code, out.String(), errb.String())
	}
	lease := filepath.Join(ipam, "tenant-net", "10.1.0.7")
	os.MkdirAll(filepath.Dir(lease), 0o755)
	os.WriteFile(lease, []byte("gone-container\r\nnet1"), 0o644)
	out.Reset()
	if code := run(append(args, "-o", "json"), &out, &errb); code != 1 {
		t.Fatalf("stale lease: exit %d, want 1\n%s", code, out.String())
	}
	var r struct {
		Findings []struct{ Kind, Subject, Fix string }
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(r.Findings) != 1 || r.Findings[0].Kind != "stale-lease" || r.Findings[0].Subject != lease {
		t.Fatalf("findings %+v", r.Findings)
	}
	out.Reset()
	errb.Reset()
	if code := run(append(args, "--fix", "--dry-run"), &out, &errb); code != 1 || !strings.Contains(out.String(), "would fix: stale-lease "+lease) {
		t.Fatalf("dry run: exit %d\n%s", code, out.String())
	}
	if _, err := os.Stat(lease); err != nil {
		t.Fatalf("the dry run removed the lease: %v", err)
	}
	out.Reset()
	errb.Reset()
	if code := run(append(args, "--fix"), &out, &errb); code != 0 || !strings.Contains(out.String(), "fixed: stale-lease "+lease) {
		t.Fatalf("fix: exit %d\n%s%s", code, out.String(), errb.String())
	}
	if !strings.Contains(errb.String(), "would fix") || !strings.Contains(errb.String(), "msg=fixed") {
		t.Errorf("fix log lacks the plan or the step:\n%s", errb.String())
	}
	if _, err := os.Stat(lease); err == nil {
		t.Error("the lease is still there after --fix")
	}
}

// VFs that drifted from the node policy (count, driver) are reported and not changed.
func TestDoctorPolicyDrift(t *testing.T) {
	tree := simNode(t)
	args, _ := doctorArgs(t, tree.Root)
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(policy, []byte("pfs:\n- pf: 0000:00:02.0\n  numVfs: 2\n  groups:\n  - vfs: \"0-1\"\n    driver: netdev\n"), 0o644)
	var out, errb bytes.Buffer
	if code := run(append(args, "--policy", policy, "--fix"), &out, &errb); code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "policy-drift") || !strings.Contains(out.String(), "0000:00:12.2") {
		t.Errorf("no drift of the vfio-pci VF reported:\n%s", out.String())
	}
	if drv, _ := os.Readlink(filepath.Join(tree.Root, "bus/pci/devices/0000:00:12.2/driver")); !strings.HasSuffix(drv, "vfio-pci") {
		t.Errorf("doctor changed the VF's driver: %s", drv)
	}
}

// A record's temp file left by a writer killed before its rename is reported once it is old
// and removed by --fix; a fresh one (a write in flight) is left alone.
func TestDoctorStaleTempFiles(t *testing.T) {
	tree := simNode(t)
	args, _ := doctorArgs(t, tree.Root)
	state := args[4]
	dir := filepath.Join(state, "cache")
	os.MkdirAll(dir, 0o700)
	old, fresh := filepath.Join(dir, ".c1-net1.json.tmp-111"), filepath.Join(dir, ".c2-net1.json.tmp-222")
	os.WriteFile(old, []byte(`{"contai`), 0o600)
	os.WriteFile(fresh, []byte(`{"contai`), 0o600)
	past := time.Now().Add(-time.Hour)
	os.Chtimes(old, past, past)
	var out, errb bytes.Buffer
	if code := run(append(args, "--fix"), &out, &errb); code != 0 || !strings.Contains(out.String(), "fixed: stale-temp "+old) {
		t.Fatalf("exit %d\n%s%s", code, out.String(), errb.String())
	}
	if _, err := os.Stat(old); err == nil {
		t.Error("the old temp file is still there")
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("the fresh temp file was removed: %v", err)
	}
}
