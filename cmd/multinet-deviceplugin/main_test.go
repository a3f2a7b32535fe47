package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/multinet-io/multinet/pci/pcitest"
)

// --check prints to stdout; run the test binary's own main through a child for a clean stdout.
func TestCheckPrintsPools(t *testing.T) {
	// The child runs main only: set up nothing there (it exits before t.TempDir's cleanup).
	if os.Getenv("MN_DP_CHILD") == "1" {
		os.Exit(run(strings.Fields(os.Getenv("MN_DP_ARGS")), os.Stderr))
	}
	tr := pcitest.New(t)
	tr.AddPF(pcitest.PF{Address: "0000:3b:00.0", Vendor: "8086", Device: "1593", Driver: "ice", Netdev: "mnpf0", TotalVFs: 8})
	tr.AddVF(pcitest.VF{PF: "0000:3b:00.0", Index: 0, Address: "0000:3b:01.0", Vendor: "8086", Device: "1889", Driver: "iavf", Netdev: "mnpf0v0"})
	cfg := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(cfg, []byte(`{"resourceList":[{"resourceName":"vf","selectors":{"pfNames":["mnpf0"]}}]}`), 0o644)

	cmd := exec.Command(os.Args[0], "-test.run", "^TestCheckPrintsPools$")
	cmd.Env = append(os.Environ(), "MN_DP_CHILD=1", "MN_DP_ARGS=--config "+cfg+" --sysfs-root "+tr.Root+" --check")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(string(out), "intel.com/vf: 1 devices [0000:3b:01.0]") {
		t.Errorf("--check printed %q", out)
	}
}

// --check lists a refused pool with its reason next to the pools it serves, and exits 1.
func TestCheckReportsRefusedPool(t *testing.T) {
	// The child runs main only: set up nothing there (it exits before t.TempDir's cleanup).
	if os.Getenv("MN_DP_CHILD") == "1" {
		os.Exit(run(strings.Fields(os.Getenv("MN_DP_ARGS")), os.Stderr))
	}
	tr := pcitest.New(t)
	tr.AddPF(pcitest.PF{Address: "0000:3b:00.0", Vendor: "8086", Device: "1593", Driver: "ice", Netdev: "mnpf0", TotalVFs: 8})
	tr.AddVF(pcitest.VF{PF: "0000:3b:00.0", Index: 0, Address: "0000:3b:01.0", Vendor: "8086", Device: "1889", Driver: "iavf", Netdev: "mnpf0v0"})
	cfg := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(cfg, []byte(`{"resourceList":[{"resourceName":"vf","selectors":{"pfNames":["mnpf0"]}},
	  {"resourceName":"gtp","selectors":{"ddpProfiles":["GTP"]}}]}`), 0o644)
	cmd := exec.Command(os.Args[0], "-test.run", "^TestCheckReportsRefusedPool$")
	cmd.Env = append(os.Environ(), "MN_DP_CHILD=1", "MN_DP_ARGS=--config "+cfg+" --sysfs-root "+tr.Root+" --check")
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v, want 1\n%s", err, out)
	}
	for _, want := range []string{"intel.com/vf: 1 devices [0000:3b:01.0]", `intel.com/gtp: refused: resourceList[1] "gtp": selectors[0].ddpProfiles`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("--check printed %q, want %q", out, want)
		}
	}
}

func TestBadConfigExitsNamingPool(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(cfg, []byte(`{"resourceList":[{"resourceName":"vf","selectors":{"vendors":["intel"]}}]}`), 0o644)
	var stderr bytes.Buffer
	// --pools-file: a failed start must not publish into the host's real pools file.
	pools := filepath.Join(t.TempDir(), "pools.json")
	if rc := run([]string{"--config", cfg, "--sysfs-root", t.TempDir(), "--pools-file", pools}, &stderr); rc != 1 {
		t.Fatalf("exit %d, want 1", rc)
	}
	if !strings.Contains(stderr.String(), `"vf": selectors[0].vendors: "intel"`) {
		t.Errorf("stderr %q", stderr.String())
	}
	if _, err := os.Stat(pools); err == nil {
		t.Errorf("a device plugin that did not start published %s", pools)
	}
}
