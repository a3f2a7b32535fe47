//go:build e2e_vm

package guest

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/vfmanager"
)

// The runner copies Debian's testpmd with its libraries and PMDs into the guest.
const testpmd = "/usr/bin/dpdk-testpmd"

// TestDPDKTestpmdOnVFIOVF is a DPDK pod on a real VF, end to end: the node policy binds VF 1 of
// the igb PF to vfio-pci, the device plugin allocates it, the sriov CNI sets its MAC through
// the PF, `multinetctl dpdk-args` turns the allocation's PCIDEVICE_* environment into EAL
// arguments, and testpmd on the VF (igb VF PMD, through vfio and the emulated IOMMU) sends
// packets to the PF's MAC. The PF's kernel netdev counts them arriving from the VF's MAC.
func TestDPDKTestpmdOnVFIOVF(t *testing.T) {
	inGuest(t)
	if _, err := os.Stat(testpmd); err != nil {
		t.Fatalf("testpmd is not in the guest (the runner copies it from the host; e2e/vm/deps.sh installs it): %v", err)
	}
	pfnd := pfNetdev(t, pf1)
	m := vfmanager.New(pci.New("/sys"))
	t.Cleanup(func() {
		if err := m.SetNumVFs(pf1, 0, time.Minute); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	// The PF up before its VFs exist: igb answers its VFs' mailbox (the reset that gives a VF
	// its MAC and turns its queues on) only from a running PF, and a VF probed before that
	// never gets an answer.
	pfl, _ := pfUp(t, pf1)
	logFrom := len(kernelLog())
	policy := "/tmp/dpdk-policy.yaml"
	if err := os.WriteFile(policy, []byte("pfs:\n- pf: "+pfnd+"\n  numVfs: 2\n  groups:\n  - {vfs: \"0\", driver: netdev}\n  - {vfs: \"1\", driver: vfio-pci}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("policy:\n%s", ctl(t, "vf", "apply", "-f", policy))
	vfs, err := m.Sys.VFs(pf1)
	if err != nil || len(vfs) != 2 {
		t.Fatalf("VFs of %s after the policy: %v %v", pf1, vfs, err)
	}
	vf := vfs[1]
	if d, _ := m.Sys.Driver(vf); d != "vfio-pci" {
		t.Fatalf("VF 1 (%s) on %q after the policy, want vfio-pci", vf, d)
	}
	p := startDevicePlugin(t, `{"resourceList":[{"resourceName":"igb_dpdk","selectors":{"vendors":["8086"],"devices":["10ca"],"drivers":["vfio-pci"]}}]}`)
	waitFor(t, "the vfio VF listed in its pool", func() bool { return len(p.reg.health("intel.com/igb_dpdk")) == 1 })
	alloc := p.allocate(t, "igb_dpdk", vf)

	// The attachment: the sriov CNI in DPDK mode gives the VF its MAC through the PF.
	mac := "02:00:00:15:00:01"
	pod := newPodNS(t)
	e := newCNIEnv(t)
	conf := `{"cniVersion":"1.1.0","name":"dpdk-vf","type":"sriov","deviceID":"` + vf + `","mac":"` + mac + `"}`
	if _, err := e.run("ADD", "testpmd1", pod.Path(), conf); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := e.run("DEL", "testpmd1", pod.Path(), conf); err != nil {
			t.Error(err)
		}
	})

	// The pod's side: EAL arguments from the allocation's environment (no downward-API file).
	env := []string{"PATH=/bin"}
	for k, v := range alloc.Envs {
		env = append(env, k+"="+v)
	}
	cmd := exec.Command("/bin/multinetctl", "dpdk-args", "-o", "lines")
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("multinetctl dpdk-args with %v: %v\n%s", alloc.Envs, err, stderr.String())
	}
	eal := strings.Fields(string(out))
	mailboxAnswered(t, vfs[0], logFrom)
	if strings.Join(eal, " ") != "-a "+vf {
		t.Fatalf("dpdk-args for %v = %q, want -a %s", alloc.Envs, eal, vf)
	}

	rx := countFrom(t, pfl.Attrs().Index, mac)
	pfRx0 := readCounter(t, pfnd, "rx_packets")
	// Two lcores (main + forwarding) on the guest's two vCPUs; no hugepages: EAL's anonymous
	// memory, IOVA as VA through the IOMMU. testpmd forwards until a line on stdin.
	args := append([]string{"-l", "0,1", "--no-huge", "-m", "128", "--no-telemetry", "--file-prefix", "mnvf",
		"--log-level=pmd.net.e1000.init:info"}, eal...)
	args = append(args, "--", "--forward-mode=txonly", "--eth-peer=0,"+pfl.Attrs().HardwareAddr.String(),
		"--total-num-mbufs=2048", "--no-mlockall", "--nb-cores=1")
	tp := exec.Command(testpmd, args...)
	stdin, err := tp.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	// testpmd's stdout is a pipe, so block-buffered: what it prints comes at its exit. The
	// traffic itself says forwarding has started: the first frame from the VF on the PF.
	var log bytes.Buffer
	tp.Stdout, tp.Stderr = &log, &log
	t.Logf("%s %s", testpmd, strings.Join(args, " "))
	if err := tp.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- tp.Wait() }()
	// stop asks testpmd to end as its non-interactive mode expects (a line on stdin: it stops
	// forwarding, prints the port statistics and exits), and kills it if it does not.
	stop := func() error {
		stdin.Write([]byte("\n"))
		select {
		case err := <-exited:
			return err
		case <-time.After(time.Minute):
			tp.Process.Kill()
			<-exited
			return errors.New("did not exit on enter: killed")
		}
	}
	flowing := false
	for start := time.Now(); time.Since(start) < time.Minute && !flowing; time.Sleep(100 * time.Millisecond) {
		select {
		case err := <-exited:
			t.Fatalf("testpmd exited before sending: %v\n%s", err, log.String())
		default:
		}
		flowing = rx(false) > 0
	}
	if !flowing {
		pfState, _ := exec.Command("ip", "link", "show", pfnd).CombinedOutput()
		err := stop()
		dmesg, _ := exec.Command("dmesg").CombinedOutput()
		if d := strings.Split(strings.TrimSpace(string(dmesg)), "\n"); len(d) > 40 {
			dmesg = []byte(strings.Join(d[len(d)-40:], "\n"))
		}
		irqs, _ := os.ReadFile("/proc/interrupts")
		var pfIRQs []string
		for _, l := range strings.Split(string(irqs), "\n") {
			if strings.Contains(l, pfnd) || strings.Contains(l, "vfio") {
				pfIRQs = append(pfIRQs, strings.Join(strings.Fields(l), " "))
			}
		}
		t.Fatalf("no frame from the DPDK VF on the PF after 1m (testpmd: %v)\n%s\nthe PF while testpmd ran:\n%s\nPF and vfio interrupts:\n%s\nkernel log:\n%s",
			err, log.String(), pfState, strings.Join(pfIRQs, "\n"), dmesg)
	}
	time.Sleep(3 * time.Second) // a few seconds of traffic
	if err := stop(); err != nil {
		t.Errorf("testpmd: %v", err)
	}
	time.Sleep(500 * time.Millisecond) // the last frames through the PF's rx path
	got := rx(true)
	pfRx := readCounter(t, pfnd, "rx_packets") - pfRx0
	outLog := log.String()
	sent := txPackets(outLog)
	t.Logf("testpmd sent %d packets from %s (%s); the PF %s saw %d from its MAC, rx_packets +%d", sent, vf, mac, pfnd, got, pfRx)
	if sent <= 0 || got == 0 {
		t.Fatalf("no packets from the DPDK VF on the PF (testpmd TX-packets %d, PF saw %d)\n%s", sent, got, outLog)
	}
	if int64(got) > sent || int64(got) > pfRx {
		t.Errorf("PF saw %d frames from %s, more than testpmd sent (%d) or the PF's rx_packets counted (%d)", got, mac, sent, pfRx)
	}
}

var txRe = regexp.MustCompile(`Forward statistics for port 0[^\n]*\n[^\n]*RX-packets[^\n]*\n\s*TX-packets:\s+(\d+)`)

// txPackets reads the port's TX-packets from testpmd's end-of-run statistics (-1: none).
func txPackets(log string) int64 {
	m := txRe.FindStringSubmatch(log)
	if m == nil {
		return -1
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}

func readCounter(t *testing.T, netdev, name string) int64 {
	t.Helper()
	b, err := os.ReadFile("/sys/class/net/" + netdev + "/statistics/" + name)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// countFrom counts frames arriving on the interface from a source MAC, with a packet socket.
// The returned function reads the count; with end set it also stops counting.
func countFrom(t *testing.T, ifindex int, src string) func(end bool) int {
	t.Helper()
	hw, err := net.ParseMAC(src)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000})
	var n atomic.Int64
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for !stop.Load() {
			k, from, err := unix.Recvfrom(fd, buf, 0)
			if err != nil || k < 14 {
				continue
			}
			if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
				continue
			}
			if bytes.Equal(buf[6:12], hw) {
				n.Add(1)
			}
		}
	}()
	var once sync.Once
	count := func(end bool) int {
		if end {
			once.Do(func() {
				stop.Store(true)
				<-done
				unix.Close(fd)
			})
		}
		return int(n.Load())
	}
	t.Cleanup(func() { count(true) })
	return count
}

// mailboxAnswered skips the packet part when the PF does not answer its VFs' mailbox: a VF (kernel
// igbvf or DPDK's igb VF PMD) gets its MAC and its queues turned on (VFTE) only from the PF's
// answer to its reset message, so none can send. Seen with QEMU 10.0.2's igb and the guest's
// igb 6.12: the PF's "other" MSI-X vector counts only its link changes, never a VF's request,
// and the kernel VF the policy just created (with the PF up) logs "PF still in reset state".
func mailboxAnswered(t *testing.T, kernelVF string, logFrom int) {
	t.Helper()
	lines := kernelLog()
	if logFrom > len(lines) {
		logFrom = 0
	}
	for _, l := range lines[logFrom:] {
		if strings.Contains(l, "igbvf "+kernelVF+": PF still in reset state") {
			irqs, _ := os.ReadFile("/proc/interrupts")
			var pf []string
			for _, il := range strings.Split(string(irqs), "\n") {
				if strings.Contains(il, pf1) {
					pf = append(pf, strings.Join(strings.Fields(il), " "))
				}
			}
			t.Skipf("BLOCKED by the emulated NIC: the igb PF (up) did not answer the reset of its kernel VF %s (%q), so no VF of it can send; "+
				"the EAL arguments and the vfio-pci VF are ready, testpmd is not run. PF interrupts:\n%s", kernelVF, strings.TrimSpace(l), strings.Join(pf, "\n"))
		}
	}
}

func kernelLog() []string {
	out, _ := exec.Command("dmesg").CombinedOutput()
	return strings.Split(string(out), "\n")
}
