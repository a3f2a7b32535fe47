//go:build e2e_dpdk

// Package dpdke2e is the host tier of the DPDK data path: OVS-DPDK started by the test in its
// own directory (as in the checked recipe), the device plugin's vhost-user pool allocating
// slots in-process, the meta-plugin and the vhostuser plugin run as binaries the way a runtime
// runs them, and dpdk-testpmd on each pod's slot passing packets through OVS.
package dpdke2e

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/multinet-io/multinet/e2e/ovsdpdk"
)

// runDir is short on purpose: slot sockets live under it and sun_path is 108 bytes.
const runDir = "/tmp/mn-dpdk"

var (
	ovsDB  = "unix:" + runDir + "/ovs/run/db.sock"
	binDir = runDir + "/bin"
	// ovs is the switch of this run, started by TestMain through the shared harness.
	ovs = &ovsdpdk.OVS{Dir: runDir + "/ovs", DB: ovsDB}
)

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("e2e/dpdk: skipped (needs root: hugepages, OVS-DPDK, network namespaces)")
		os.Exit(0)
	}
	if err := ovsdpdk.MissingTools("dpdk-testpmd", "nsenter", "stdbuf"); err != nil {
		fmt.Println("e2e/dpdk:", err)
		os.Exit(1)
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if err := os.RemoveAll(runDir); err != nil {
		fmt.Println("e2e/dpdk:", err)
		return 1
	}
	restore, err := ovsdpdk.Hugepages(400)
	if err != nil {
		fmt.Println("e2e/dpdk: hugepages:", err)
		return 1
	}
	defer restore()
	if out, err := exec.Command("go", "build", "-o", binDir+"/", "../../cmd/multinet", "../../cmd/vhostuser", "../../cmd/multinetctl").CombinedOutput(); err != nil {
		fmt.Printf("e2e/dpdk: build: %v\n%s", err, out)
		return 1
	}
	o, err := ovsdpdk.Start(runDir + "/ovs")
	if err != nil {
		fmt.Println("e2e/dpdk: OVS-DPDK:", err)
		o.Stop()
		return 1
	}
	ovs = o
	code := m.Run()
	o.Stop()
	if code == 0 {
		// Logs and state stay for a failed run to be looked at; a passed one leaves nothing.
		_ = os.RemoveAll(runDir)
	} else if tail := o.LogTail(30); tail != "" {
		fmt.Printf("=== tail of ovs-vswitchd log (%s/ovs/log)\n%s\n", runDir, tail)
	}
	return code
}

// vsctl runs ovs-vsctl against the test's OVS and returns its trimmed output.
func vsctl(args ...string) (string, error) { return ovs.Vsctl(args...) }

func mustVsctl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := vsctl(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// vhuPorts lists the ports of every bridge that the vhostuser plugin made (names vhu...).
func vhuPorts(t testing.TB) []string {
	t.Helper()
	out, err := ovs.Ports("vhu")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// portStats reads a port's live counters from ovs-vswitchd (see ovsdpdk.OVS.PortStats).
func portStats(t testing.TB, port string) (rx, tx, txDrop int) {
	t.Helper()
	rx, tx, txDrop, err := ovs.PortStats(port)
	if err != nil {
		t.Fatal(err)
	}
	return rx, tx, txDrop
}
