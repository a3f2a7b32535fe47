// Package ovsdpdk is the e2e tiers' OVS-DPDK harness (the checked recipe as code): hugepages,
// ovsdb-server and the DPDK ovs-vswitchd started in a directory of their own (nothing of the
// system's OVS is touched), ovs-vsctl against that OVS, and a port's live counters. The host
// tier (e2e/dpdk) and the cluster tier (e2e/cluster) both start their switch through it.
package ovsdpdk

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// VswitchdDPDK is Debian's DPDK build of ovs-vswitchd (openvswitch-switch-dpdk), run by path:
// the system's ovs-vswitchd alternative is left alone.
const VswitchdDPDK = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk"

// Tools are the programs the harness runs; e2e/dpdk/deps.sh installs them.
var Tools = []string{VswitchdDPDK, "ovsdb-server", "ovs-vsctl", "ovsdb-tool", "ovs-ofctl", "mountpoint"}

// MissingTools names the tools not on this machine, with why; nil when all are there.
func MissingTools(extra ...string) error {
	var missing []string
	for _, t := range append(append([]string{}, Tools...), extra...) {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s (run e2e/dpdk/deps.sh)", strings.Join(missing, ", "))
	}
	return nil
}

// ErrTooFewHugepages says the machine cannot run OVS-DPDK: the kernel did not give the 2 MB
// pages it needs. Tiers skip on it (outside CI) rather than fail.
var ErrTooFewHugepages = errors.New("too few hugepages for OVS-DPDK")

// Hugepages makes sure at least n 2 MB pages exist and hugetlbfs is mounted (OVS-DPDK cannot
// run without: it always adds --in-memory, which --no-huge contradicts), and returns how to put
// the host back as it was.
func Hugepages(n int) (func(), error) {
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
			return func() {}, fmt.Errorf("%w: asked for %d 2 MB pages, the kernel gave %d (OVS-DPDK needs 128 + headroom)", ErrTooFewHugepages, n, got)
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

// OVS is one running OVS-DPDK with its db, run and log dirs under Dir.
type OVS struct {
	Dir string
	DB  string // the OVSDB remote, unix:<Dir>/run/db.sock
}

// Start runs ovsdb-server and the DPDK ovs-vswitchd under dir (made if missing) and waits for
// DPDK to be initialised. On error the returned OVS can still be stopped (it is never nil).
func Start(dir string) (*OVS, error) {
	o := &OVS{Dir: dir, DB: "unix:" + dir + "/run/db.sock"}
	for _, s := range []string{"run", "etc", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, s), 0o755); err != nil {
			return o, err
		}
	}
	env := append(os.Environ(), "OVS_RUNDIR="+dir+"/run", "OVS_LOGDIR="+dir+"/log", "OVS_DBDIR="+dir+"/etc")
	steps := [][]string{
		{"ovsdb-tool", "create", dir + "/etc/conf.db", "/usr/share/openvswitch/vswitch.ovsschema"},
		{"ovsdb-server", dir + "/etc/conf.db", "--remote=punix:" + dir + "/run/db.sock", "--pidfile=" + o.pidFiles()[1], "--detach", "--log-file=" + dir + "/log/ovsdb.log"},
		{"ovs-vsctl", "--db=" + o.DB, "--no-wait", "init"},
		// One lcore for OVS's main thread, the second core for its PMD; 256 MB of the pages.
		{"ovs-vsctl", "--db=" + o.DB, "--no-wait", "set", "Open_vSwitch", ".", "other_config:dpdk-init=true",
			"other_config:dpdk-extra=--no-pci", "other_config:dpdk-socket-mem=256", "other_config:dpdk-socket-limit=256",
			"other_config:dpdk-lcore-mask=0x1", "other_config:pmd-cpu-mask=0x2"},
		{VswitchdDPDK, o.DB, "--pidfile=" + o.pidFiles()[0], "--detach", "--log-file=" + dir + "/log/vswitchd.log"},
	}
	for _, s := range steps {
		cmd := exec.Command(s[0], s[1:]...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			return o, fmt.Errorf("%s: %v\n%s", strings.Join(s, " "), err, out)
		}
	}
	if out, err := o.Vsctl("get", "Open_vSwitch", ".", "dpdk_initialized"); err != nil || out != "true" {
		return o, fmt.Errorf("dpdk_initialized %q: %v", out, err)
	}
	return o, nil
}

func (o *OVS) pidFiles() []string {
	return []string{o.Dir + "/run/ovs-vswitchd.pid", o.Dir + "/run/ovsdb-server.pid"}
}

// Stop kills ovs-vswitchd and ovsdb-server by their pid files.
func (o *OVS) Stop() {
	for _, pf := range o.pidFiles() {
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

// LogTail returns the last n lines of ovs-vswitchd's log, for a failed test to show.
func (o *OVS) LogTail(n int) string {
	b, err := os.ReadFile(o.Dir + "/log/vswitchd.log")
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Vsctl runs ovs-vsctl against this OVS and returns its trimmed output.
func (o *OVS) Vsctl(args ...string) (string, error) {
	cmd := exec.Command("ovs-vsctl", append([]string{"--db=" + o.DB, "--timeout=10"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("ovs-vsctl %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

var portStatsRe = regexp.MustCompile(`rx pkts=(\d+|\?).*\n\s*tx pkts=(\d+|\?), bytes=[^,]*, drop=(\d+|\?)`)

// PortStats reads a port's live counters from ovs-vswitchd (OpenFlow port stats): the
// Interface statistics column in OVSDB is only refreshed every 5 s. A port that never came up
// reports "?": zero.
func (o *OVS) PortStats(port string) (rx, tx, txDrop int, err error) {
	br, err := o.Vsctl("port-to-br", port)
	if err != nil {
		return 0, 0, 0, err
	}
	out, err := exec.Command("ovs-ofctl", "dump-ports", "unix:"+o.Dir+"/run/"+br+".mgmt", port).CombinedOutput()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("ovs-ofctl dump-ports %s: %v: %s", port, err, out)
	}
	m := portStatsRe.FindStringSubmatch(string(out))
	if m == nil {
		return 0, 0, 0, fmt.Errorf("ovs-ofctl dump-ports %s: no counters in %q", port, out)
	}
	rx, _ = strconv.Atoi(m[1])
	tx, _ = strconv.Atoi(m[2])
	txDrop, _ = strconv.Atoi(m[3])
	return rx, tx, txDrop, nil
}

// Ports lists the ports of every bridge whose names start with prefix, as bridge/port.
func (o *OVS) Ports(prefix string) ([]string, error) {
	brs, err := o.Vsctl("list-br")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, br := range strings.Fields(brs) {
		ps, err := o.Vsctl("list-ports", br)
		if err != nil {
			return nil, err
		}
		for _, p := range strings.Fields(ps) {
			if strings.HasPrefix(p, prefix) {
				out = append(out, br+"/"+p)
			}
		}
	}
	return out, nil
}

var accumulatedRe = regexp.MustCompile(`(?s)Accumulated forward statistics for all ports.*?RX-packets:\s+(\d+).*?TX-packets:\s+(\d+)`)

// TestpmdStopped matches what dpdk-testpmd prints when forwarding stops ("stop" at its prompt).
var TestpmdStopped = accumulatedRe

// TestpmdStarted matches what dpdk-testpmd prints when forwarding starts.
var TestpmdStarted = regexp.MustCompile(`packet forwarding - ports=`)

// TestpmdTotals parses testpmd's "Accumulated forward statistics" block (printed at "stop").
func TestpmdTotals(out string) (rx, tx int, err error) {
	m := accumulatedRe.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, errors.New("no forward statistics in testpmd output")
	}
	rx, _ = strconv.Atoi(m[1])
	tx, _ = strconv.Atoi(m[2])
	return rx, tx, nil
}
