//go:build e2e_cluster

package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/multinet-io/multinet/e2e/cluster/clustertest"
	"github.com/multinet-io/multinet/e2e/ovsdpdk"
	"github.com/multinet-io/multinet/pci/pcitest"
)

// The DPDK pods' setup on the node: OVS-DPDK in its own dir, a server-mode vhost-user pool
// served by the device plugin, an image with Debian's dpdk-testpmd.
const (
	dpdkRes    = "multinet.io/mn_e2e_dpdk"
	dpdkImage  = "multinet.io/testpmd:e2e"
	dpdkBridge = "br-mnc"
	dpdkNAD    = "mn-dpdk-net"
	dpdkVLAN   = 100
	// dpdkDir is short on purpose: the slots' sockets live under it and sun_path is 108 bytes.
	dpdkDir  = "/tmp/mn-dpdkc"
	dpdkCDir = "/var/run/vhu"
	pmdDir   = "/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0"
)

// startNodeOVS runs OVS-DPDK on the node for the test, through the harness the host tier
// uses. It skips only when the machine cannot run OVS-DPDK (too few hugepages), and never on
// CI, where that is a broken runner.
func startNodeOVS(t *testing.T) *ovsdpdk.OVS {
	t.Helper()
	if err := ovsdpdk.MissingTools("dpdk-testpmd", "stdbuf"); err != nil {
		t.Fatalf("OVS-DPDK on the node: %v (make e2e-cluster runs it)", err)
	}
	if err := os.RemoveAll(dpdkDir); err != nil {
		t.Fatal(err)
	}
	restore, err := ovsdpdk.Hugepages(400)
	if errors.Is(err, ovsdpdk.ErrTooFewHugepages) && os.Getenv("CI") != "true" {
		t.Skipf("OVS-DPDK cannot run on this machine: %v", err)
	}
	if err != nil {
		t.Fatalf("hugepages for OVS-DPDK: %v", err)
	}
	t.Cleanup(restore)
	o, err := ovsdpdk.Start(dpdkDir + "/ovs")
	t.Cleanup(func() {
		o.Stop()
		if t.Failed() {
			t.Logf("tail of ovs-vswitchd log (%s/ovs/log):\n%s", dpdkDir, o.LogTail(30))
			return
		}
		os.RemoveAll(dpdkDir)
	})
	if err != nil {
		t.Fatalf("OVS-DPDK: %v", err)
	}
	if _, err := o.Vsctl("add-br", dpdkBridge, "--", "set", "bridge", dpdkBridge, "datapath_type=netdev"); err != nil {
		t.Fatal(err)
	}
	return o
}

// importTestpmd packs Debian's dpdk-testpmd, every library it and the PMD plugins load (as ldd
// resolves them here), busybox, our multinetctl and the entrypoint into an image, with the
// repo's own image writer, and imports it into the node's containerd: no registry.
func importTestpmd(t *testing.T, c *clustertest.Cluster) {
	t.Helper()
	work := t.TempDir()
	ctl := buildTool(t, "./cmd/multinetctl", work)
	entry, err := filepath.Abs("testpmd/entrypoint.sh")
	if err != nil {
		t.Fatal(err)
	}
	tar := filepath.Join(work, "testpmd.tar")
	start := time.Now()
	if b, err := runCmd(filepath.Join(c.Dir, "tools", "clusterctl"), "image-files", dpdkImage, tar, "/entrypoint.sh",
		"/usr/bin/dpdk-testpmd", pmdDir, "/bin/busybox", "/usr/bin/stdbuf", "/usr/libexec/coreutils/libstdbuf.so",
		// glibc dlopens libgcc_s for pthread_cancel: no ldd line names it.
		"/usr/lib/x86_64-linux-gnu/libgcc_s.so.1",
		ctl+"=/usr/local/bin/multinetctl", entry+"=/entrypoint.sh"); err != nil {
		t.Fatalf("pack the testpmd image: %v\n%s", err, b)
	}
	if b, err := runCmd("ctr", "-a", filepath.Join(c.Dir, "containerd", "containerd.sock"), "-n", "k8s.io", "images", "import", tar); err != nil {
		t.Fatalf("import the testpmd image: %v\n%s", err, b)
	}
	t.Logf("testpmd image packed and imported in %s", time.Since(start).Round(100*time.Millisecond))
}

// dpdkPod is a pod of the testpmd image: its slot comes from the vhost pool through the NAD
// (requested in resources: no webhook adds it yet), network-status through the downward API,
// and its testpmd takes commands from a FIFO in a host directory.
type dpdkPod struct {
	name, ctl string
	pod       *corev1.Pod
	port      string // its OVS port
}

func createDPDKPod(t *testing.T, c *clustertest.Cluster, name, mode string) *dpdkPod {
	t.Helper()
	p := &dpdkPod{name: name, ctl: filepath.Join(dpdkDir, "ctl", name)}
	if err := os.MkdirAll(p.ctl, 0o755); err != nil {
		t.Fatal(err)
	}
	dirType := corev1.HostPathDirectory
	c.CreatePod(t, "default", name, withNetworks(dpdkNAD), func(pod *corev1.Pod) {
		ctr := &pod.Spec.Containers[0]
		ctr.Image = dpdkImage
		ctr.Command = []string{"/entrypoint.sh", mode}
		ctr.Resources.Limits = corev1.ResourceList{dpdkRes: resource.MustParse("1")}
		ctr.VolumeMounts = []corev1.VolumeMount{{Name: "podnetinfo", MountPath: "/etc/podnetinfo", ReadOnly: true}, {Name: "ctl", MountPath: "/ctl"}}
		pod.Spec.Volumes = []corev1.Volume{
			{Name: "podnetinfo", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
				Items: []corev1.DownwardAPIVolumeFile{{Path: "annotations", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations"}}}}}},
			{Name: "ctl", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: p.ctl, Type: &dirType}}},
		}
	})
	return p
}

// log is the container's output so far, as the runtime wrote it for kubelet.
func (p *dpdkPod) log() string {
	dir := filepath.Join("/var/log/pods", p.pod.Namespace+"_"+p.pod.Name+"_"+string(p.pod.UID), p.pod.Spec.Containers[0].Name)
	files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	var out strings.Builder
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, line := range strings.Split(string(b), "\n") {
			if parts := strings.SplitN(line, " ", 4); len(parts) == 4 {
				out.WriteString(parts[3] + "\n")
			}
		}
	}
	return out.String()
}

// waitLog waits until the log, from offset on, matches want.
func (p *dpdkPod) waitLog(t *testing.T, offset int, want *regexp.Regexp, what string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if l := p.log(); len(l) >= offset && want.MatchString(l[offset:]) {
			return l[offset:]
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("pod %s: no %s (%s) in its log after 60s:\n%s", p.name, what, want, p.log())
	return ""
}

// command types a line at the pod's testpmd prompt and waits for want in its output.
func (p *dpdkPod) command(t *testing.T, line string, want *regexp.Regexp) string {
	t.Helper()
	before := len(p.log())
	// The entrypoint holds the FIFO open for reading: this open does not block.
	f, err := os.OpenFile(filepath.Join(p.ctl, "cmd"), os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatalf("pod %s: testpmd's command FIFO: %v\n%s", p.name, err, p.log())
	}
	_, err = f.WriteString(line + "\n")
	f.Close()
	if err != nil {
		t.Fatalf("pod %s: %q: %v", p.name, line, err)
	}
	return p.waitLog(t, before, want, "answer to "+line)
}

func runCmd(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}

// Two DPDK pods on the real kubelet, each given a vhost-user slot by the device plugin through
// a vhostuser NAD: the meta-plugin and the vhostuser plugin (run by containerd) make their OVS
// ports, the pods' testpmd, started with `multinetctl dpdk-args`, pass packets through
// OVS-DPDK, and deleting the pods removes the ports and frees the slots.
func TestDPDKPodsPassPacketsThroughOVS(t *testing.T) {
	c := clustertest.Connect(t)
	ovs := startNodeOVS(t)
	importTestpmd(t, c)
	pool := filepath.Join(dpdkDir, "s")
	p := startDevicePlugin(t, c, pcitest.New(t).Root, `{"resourceList":[{"resourceName":"mn_e2e_dpdk","resourcePrefix":"multinet.io",
	  "deviceType":"vhostUser","vhostUser":{"dir":"`+pool+`","count":2,"mode":"server","containerDir":"`+dpdkCDir+`"}}]}`)
	waitNodeRes(t, c, p, "registered", dpdkRes, 2, 2)
	// containerDir repeats the pool's: the plugin publishes the socket as the pod sees it.
	c.CreateNAD(t, "default", dpdkNAD, fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"type":"vhostuser","bridge":%q,"vlan":%d,"mtu":1500,"ovsdbSocket":%q,"containerDir":%q}`,
		dpdkNAD, dpdkBridge, dpdkVLAN, ovs.DB, dpdkCDir), map[string]string{"k8s.v1.cni.cncf.io/resourceName": dpdkRes})

	rx, tx := createDPDKPod(t, c, "dpdk-rx", "rxonly"), createDPDKPod(t, c, "dpdk-tx", "txonly")
	slots := map[string]bool{}
	for _, d := range []*dpdkPod{rx, tx} {
		d.pod = c.WaitRunning(t, "default", d.name, 120*time.Second)
		sbs := c.Sandboxes(t, "default", d.name)
		if len(sbs) != 1 {
			t.Fatalf("pod %s: sandboxes %v", d.name, sbs)
		}
		out, err := ovs.Vsctl("--bare", "--columns=name", "find", "Interface", "external_ids:multinet-container-id="+sbs[0])
		if err != nil || out == "" || strings.Contains(out, "\n") {
			t.Fatalf("pod %s: want one OVS port for sandbox %s, got %q %v", d.name, sbs[0], out, err)
		}
		d.port = out
		slot, _ := ovs.Vsctl("get", "Interface", d.port, "external_ids:multinet-slot")
		slot = strings.Trim(slot, `"`)
		slots[slot] = true
		if got, _ := ovs.Vsctl("get", "Port", d.port, "tag"); got != fmt.Sprint(dpdkVLAN) {
			t.Errorf("port %s tag %s, want %d", d.port, got, dpdkVLAN)
		}
		// network-status carries the slot as the pod sees it; dpdk-args in the pod printed it.
		var sts []nadv1.NetworkStatus
		if err := json.Unmarshal([]byte(d.pod.Annotations[nadv1.NetworkStatusAnnot]), &sts); err != nil {
			t.Fatalf("pod %s network-status: %v", d.name, err)
		}
		podSock := fmt.Sprintf("%s/%s/sock", dpdkCDir, slot)
		if len(sts) != 2 || sts[1].Interface != "net1" || sts[1].DeviceInfo == nil || sts[1].DeviceInfo.VhostUser == nil ||
			sts[1].DeviceInfo.VhostUser.Path != podSock || sts[1].DeviceInfo.VhostUser.Mode != "server" {
			t.Errorf("pod %s network-status %s: want net1 with vhost-user device-info %s, server", d.name, d.pod.Annotations[nadv1.NetworkStatusAnnot], podSock)
		}
		want := fmt.Sprintf("EAL-ARGS: --vdev net_virtio_user0,path=%s/%s/sock,server=1 --no-pci", dpdkCDir, slot)
		ealRe := regexp.MustCompile(`EAL-ARGS: .*`)
		if got := ealRe.FindString(d.waitLog(t, 0, ealRe, "EAL arguments")); strings.TrimSpace(got) != want {
			t.Errorf("pod %s: %q, want %q", d.name, got, want)
		}
	}
	if len(slots) != 2 {
		t.Fatalf("the two pods' ports are on slots %v, want two slots", slots)
	}

	for _, d := range []*dpdkPod{rx, tx} {
		deadline := time.Now().Add(60 * time.Second)
		for {
			if st, _ := ovs.Vsctl("get", "Interface", d.port, "link_state"); st == "up" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("port %s of pod %s not up after 60s; pod log:\n%s", d.port, d.name, d.log())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	stats := func(port string) (in, out, drop int) {
		in, out, drop, err := ovs.PortStats(port)
		if err != nil {
			t.Fatal(err)
		}
		return in, out, drop
	}
	in0, _, _ := stats(tx.port)
	_, out0, drop0 := stats(rx.port)
	rx.command(t, "start", ovsdpdk.TestpmdStarted)
	tx.command(t, "start", ovsdpdk.TestpmdStarted)
	time.Sleep(3 * time.Second)
	txOut := tx.command(t, "stop", ovsdpdk.TestpmdStopped)
	time.Sleep(1500 * time.Millisecond) // OVS and the receiver drain
	rxOut := rx.command(t, "stop", ovsdpdk.TestpmdStopped)
	in1, _, _ := stats(tx.port)
	_, out1, drop1 := stats(rx.port)
	_, sent, err := ovsdpdk.TestpmdTotals(txOut)
	if err != nil {
		t.Fatalf("sender: %v\n%s", err, txOut)
	}
	received, _, err := ovsdpdk.TestpmdTotals(rxOut)
	if err != nil {
		t.Fatalf("receiver: %v\n%s", err, rxOut)
	}
	ovsIn, ovsOut, ovsDrop := in1-in0, out1-out0, drop1-drop0
	t.Logf("pod %s sent %d, OVS took in %d on %s and sent %d on %s (%d dropped), pod %s received %d",
		tx.name, sent, ovsIn, tx.port, ovsOut, rx.port, ovsDrop, rx.name, received)
	if received < 1000 {
		t.Fatalf("receiver counted %d packets; want at least 1000\nsender:\n%s\nreceiver:\n%s", received, txOut, rxOut)
	}
	if ovsOut != received {
		t.Errorf("OVS sent %d packets to %s, the receiving pod counted %d", ovsOut, rx.port, received)
	}
	if ovsIn != ovsOut+ovsDrop || ovsIn > sent {
		t.Errorf("OVS received %d on %s, sent %d + dropped %d on %s, the sending pod sent %d: want received = sent + dropped <= sender's",
			ovsIn, tx.port, ovsOut, ovsDrop, rx.port, sent)
	}

	// Deleting the pods: the runtime's CNI DEL removes their ports and sockets, and kubelet
	// gives both slots to the next pod that asks.
	for _, d := range []*dpdkPod{tx, rx} {
		c.DeletePod(t, "default", d.name)
	}
	if ports, err := ovs.Ports("vhu"); err != nil || len(ports) != 0 {
		t.Errorf("OVS ports left after the pods went: %v %v", ports, err)
	}
	for s := range slots {
		if _, err := os.Lstat(filepath.Join(pool, s, "sock")); !os.IsNotExist(err) {
			t.Errorf("slot %s: socket left after its pod went (%v)", s, err)
		}
	}
	if recs, _ := filepath.Glob(filepath.Join(c.Dir, "cni-state", "vhostuser", "cache", "*")); len(recs) != 0 {
		t.Errorf("vhostuser attachment records left: %v", recs)
	}
	c.CreatePod(t, "default", "dpdk-both-slots", func(pod *corev1.Pod) {
		pod.Spec.Containers[0].Resources.Limits = corev1.ResourceList{dpdkRes: resource.MustParse("2")}
	})
	c.WaitRunning(t, "default", "dpdk-both-slots", 60*time.Second)
}
