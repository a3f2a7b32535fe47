//go:build e2e_dpdk

// Package dpdke2e is the host tier of the DPDK data path: OVS-DPDK started by the test in its
// own directory (as in the checked recipe), the device plugin's vhost-user pool allocating
// slots in-process, the meta-plugin and the vhostuser plugin run as binaries the way a runtime
// runs them, and dpdk-testpmd on each pod's slot passing packets through OVS.
package dpdke2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runDir is short on purpose: slot sockets live under it and sun_path is 108 bytes.
const runDir = "/tmp/mn-dpdk"

const vswitchdDPDK = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk"

var (
	ovsDB  = "unix:" + runDir + "/ovs/run/db.sock"
	binDir = runDir + "/bin"
)

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("e2e/dpdk: skipped (needs root: hugepages, OVS-DPDK, network namespaces)")
		os.Exit(0)
	}
	for _, t := range []string{vswitchdDPDK, "ovsdb-server", "ovs-vsctl", "ovsdb-tool", "ovs-ofctl", "dpdk-testpmd", "nsenter", "stdbuf", "mountpoint"} {
		if _, err := exec.LookPath(t); err != nil {
			fmt.Printf("e2e/dpdk: %s missing (run e2e/dpdk/deps.sh): %v\n", t, err)
			os.Exit(1)
		}
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if err := os.RemoveAll(runDir); err != nil {
		fmt.Println("e2e/dpdk:", err)
		return 1
	}
	restore, err := hugepages(400)
	if err != nil {
		fmt.Println("e2e/dpdk: hugepages:", err)
		return 1
	}
	defer restore()
	if out, err := exec.Command("go", "build", "-o", binDir+"/", "../../cmd/multinet", "../../cmd/vhostuser", "../../cmd/multinetctl").CombinedOutput(); err != nil {
		fmt.Printf("e2e/dpdk: build: %v\n%s", err, out)
		return 1
	}
	stop, err := startOVS()
	if err != nil {
		fmt.Println("e2e/dpdk: OVS-DPDK:", err)
		stop()
		return 1
	}
	code := m.Run()
	stop()
	if code == 0 {
		// Logs and state stay for a failed run to be looked at; a passed one leaves nothing.
		_ = os.RemoveAll(runDir)
	} else {
		if b, err := os.ReadFile(runDir + "/ovs/log/vswitchd.log"); err == nil {
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			if len(lines) > 30 {
				lines = lines[len(lines)-30:]
			}
			fmt.Printf("=== tail of ovs-vswitchd log (%s/ovs/log)\n%s\n", runDir, strings.Join(lines, "\n"))
		}
	}
	return code
}

// hugepages makes sure at least n 2 MB pages exist and hugetlbfs is mounted (OVS-DPDK cannot
// run without: it always adds --in-memory, which --no-huge contradicts), and returns how to put
// the host back as it was.
func hugepages(n int) (func(), error) {
	const nr = "/proc/sys/vm/nr_hugepages"
	b, err := os.ReadFile(nr)
	if err != nil {
		return func() {}, err
	}
	prev, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	var undo []func()
	if prev < n {
		if err := os.WriteFile(nr, []byte(strconv.Itoa(n)), 0o644); err != nil {
			return func() {}, err
		}
		undo = append(undo, func() { _ = os.WriteFile(nr, []byte(strconv.Itoa(prev)), 0o644) })
		// The kernel gives what it can find contiguous; OVS takes 256 MB (128 pages) of them.
		b, _ := os.ReadFile(nr)
		if got, _ := strconv.Atoi(strings.TrimSpace(string(b))); got < 160 {
			undo[0]()
			return func() {}, fmt.Errorf("asked for %d 2 MB pages, the kernel gave %d (OVS-DPDK needs 128 + headroom)", n, got)
		}
	}
	if exec.Command("mountpoint", "-q", "/dev/hugepages").Run() != nil {
		if _, err := os.Stat("/dev/hugepages"); os.IsNotExist(err) {
			if err := os.Mkdir("/dev/hugepages", 0o755); err != nil {
				return func() {}, err
			}
			undo = append(undo, func() { _ = os.Remove("/dev/hugepages") })
		}
		if err := syscall.Mount("none", "/dev/hugepages", "hugetlbfs", 0, ""); err != nil {
			return func() {}, fmt.Errorf("mount hugetlbfs: %w", err)
		}
		undo = append(undo, func() { _ = syscall.Unmount("/dev/hugepages", 0) })
	}
	return func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}, nil
}

// startOVS runs ovsdb-server and the DPDK ovs-vswitchd with their own db, run and log dirs:
// nothing of the system's OVS is touched. The returned stop kills them by their pid files.
func startOVS() (func(), error) {
	d := runDir + "/ovs"
	for _, s := range []string{"run", "etc", "log"} {
		if err := os.MkdirAll(filepath.Join(d, s), 0o755); err != nil {
			return func() {}, err
		}
	}
	env := append(os.Environ(), "OVS_RUNDIR="+d+"/run", "OVS_LOGDIR="+d+"/log", "OVS_DBDIR="+d+"/etc")
	pids := []string{d + "/run/ovs-vswitchd.pid", d + "/run/ovsdb-server.pid"}
	stop := func() {
		for _, pf := range pids {
			b, err := os.ReadFile(pf)
			if err != nil {
				continue
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil || pid <= 1 {
				continue
			}
			_ = syscall.Kill(pid, syscall.SIGTERM)
			for i := 0; i < 50 && syscall.Kill(pid, 0) == nil; i++ {
				time.Sleep(100 * time.Millisecond)
			}
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	steps := [][]string{
		{"ovsdb-tool", "create", d + "/etc/conf.db", "/usr/share/openvswitch/vswitch.ovsschema"},
		{"ovsdb-server", d + "/etc/conf.db", "--remote=punix:" + d + "/run/db.sock", "--pidfile=" + pids[1], "--detach", "--log-file=" + d + "/log/ovsdb.log"},
		{"ovs-vsctl", "--db=" + ovsDB, "--no-wait", "init"},
		// One lcore for OVS's main thread, the second core for its PMD; 256 MB of the pages.
		{"ovs-vsctl", "--db=" + ovsDB, "--no-wait", "set", "Open_vSwitch", ".", "other_config:dpdk-init=true",
			"other_config:dpdk-extra=--no-pci", "other_config:dpdk-socket-mem=256", "other_config:dpdk-socket-limit=256",
			"other_config:dpdk-lcore-mask=0x1", "other_config:pmd-cpu-mask=0x2"},
		{vswitchdDPDK, ovsDB, "--pidfile=" + pids[0], "--detach", "--log-file=" + d + "/log/vswitchd.log"},
	}
	for _, s := range steps {
		cmd := exec.Command(s[0], s[1:]...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			return stop, fmt.Errorf("%s: %v\n%s", strings.Join(s, " "), err, out)
		}
	}
	if out, err := vsctl("get", "Open_vSwitch", ".", "dpdk_initialized"); err != nil || out != "true" {
		return stop, fmt.Errorf("dpdk_initialized %q: %v", out, err)
	}
	return stop, nil
}

// vsctl runs ovs-vsctl against the test's OVS and returns its trimmed output.
func vsctl(args ...string) (string, error) {
	cmd := exec.Command("ovs-vsctl", append([]string{"--db=" + ovsDB, "--timeout=10"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("ovs-vsctl %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

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
	var out []string
	for _, br := range strings.Fields(mustVsctl(t, "list-br")) {
		for _, p := range strings.Fields(mustVsctl(t, "list-ports", br)) {
			if strings.HasPrefix(p, "vhu") {
				out = append(out, br+"/"+p)
			}
		}
	}
	return out
}

var portStatsRe = regexp.MustCompile(`rx pkts=(\d+|\?).*\n\s*tx pkts=(\d+|\?), bytes=[^,]*, drop=(\d+|\?)`)

// portStats reads a port's live counters from ovs-vswitchd (OpenFlow port stats): the
// Interface statistics column in OVSDB is only refreshed every 5 s. A port that never came up
// reports "?": zero.
func portStats(t testing.TB, port string) (rx, tx, txDrop int) {
	t.Helper()
	br := mustVsctl(t, "port-to-br", port)
	out, err := exec.Command("ovs-ofctl", "dump-ports", "unix:"+runDir+"/ovs/run/"+br+".mgmt", port).CombinedOutput()
	if err != nil {
		t.Fatalf("ovs-ofctl dump-ports %s: %v: %s", port, err, out)
	}
	m := portStatsRe.FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("ovs-ofctl dump-ports %s: no counters in %q", port, out)
	}
	rx, _ = strconv.Atoi(m[1])
	tx, _ = strconv.Atoi(m[2])
	txDrop, _ = strconv.Atoi(m[3])
	return rx, tx, txDrop
}
