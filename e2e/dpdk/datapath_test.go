//go:build e2e_dpdk

package dpdke2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	dp "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/multinet-io/multinet/deviceplugin"
	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/e2e/ovsdpdk"
	"github.com/multinet-io/multinet/pci/pcitest"
)

const (
	bridge   = "br-mn"
	resource = "example.com/vhost"
	vlan     = 100
)

// node is one simulated node: its device plugin (a server-mode vhost-user pool), a host network
// namespace for the cluster network, the meta-plugin's conflist in standalone mode (NADs from a
// folder, kubelet's allocations from a checkpoint file).
type node struct {
	t          testing.TB
	dir, pool  string
	netDir     string
	checkpoint string
	entries    []string
	host       ns.NetNS
	dp         dp.DevicePluginServer
	list       *libcni.NetworkConfigList
	cni        *libcni.CNIConfig
}

type pod struct {
	name, uid, cid string
	netns          ns.NetNS
	env            map[string]string // what the device plugin's Allocate gave the container
	slot           string
}

var nodeSeq int

func newNode(t testing.TB) *node {
	nodeSeq++
	dir := fmt.Sprintf("%s/n%d", runDir, nodeSeq)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, dir: dir, pool: dir + "/s", netDir: dir + "/networks", checkpoint: dir + "/kubelet_internal_checkpoint"}
	t.Setenv(devinfo.EnvBase, dir+"/devinfo")
	t.Setenv("MULTINET_STATE_DIR", dir+"/state")
	for _, d := range []string{n.netDir, dir + "/net.d", dir + "/dp"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := vsctl("--may-exist", "add-br", bridge, "--", "set", "bridge", bridge, "datapath_type=netdev"); err != nil {
		t.Fatal(err)
	}

	cfg := fmt.Sprintf(`{"resourceList":[{"resourceName":"vhost","resourcePrefix":"example.com","deviceType":"vhostUser",
		"vhostUser":{"dir":%q,"count":4,"mode":"server"}}]}`, n.pool)
	if err := os.WriteFile(dir+"/dp-config.json", []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := deviceplugin.New(deviceplugin.Options{ConfigFile: dir + "/dp-config.json", SysfsRoot: pcitest.New(t).Root,
		PluginDir: dir + "/dp", DevInfo: devinfo.Dir(dir + "/devinfo"), DefaultRouteLinks: func() ([]string, error) { return nil, nil },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if n.dp, err = m.Server(resource); err != nil {
		t.Fatal(err)
	}

	n.host, err = testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.host.Close(); testutils.UnmountNS(n.host) })
	bridgeConf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"bridge","bridge":"cni0","isGateway":true,
		"ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.244.0.0/24"}]]}}]}`, dir+"/ipam")
	if err := os.WriteFile(dir+"/net.d/10-bridge.conflist", []byte(bridgeConf), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"multinet-cni","plugins":[{"type":"multinet",
		"clusterNetwork":%q,"networkDir":%q,"cacheDir":%q,"confDir":%q,"binDir":%q,
		"kubeletCheckpoint":%q,"podResourcesSocket":%q}]}`,
		dir+"/net.d/10-bridge.conflist", n.netDir, dir+"/cache", dir+"/net.d", binDir+":/usr/lib/cni",
		n.checkpoint, dir+"/no-kubelet.sock")
	if n.list, err = libcni.ConfListFromBytes([]byte(conf)); err != nil {
		t.Fatal(err)
	}
	n.cni = libcni.NewCNIConfigWithCacheDir([]string{binDir, "/usr/lib/cni"}, dir+"/runtime-cache", nil)
	n.nad("vhu-net", fmt.Sprintf(`{"cniVersion":"1.0.0","name":"vhu-net","type":"vhostuser","bridge":%q,"vlan":%d,"mtu":1500,"ovsdbSocket":%q}`, bridge, vlan, ovsDB))
	t.Cleanup(func() {
		// Whatever a failed test left: its ports must not leak into the next one.
		for _, p := range vhuPorts(t) {
			vsctl("--if-exists", "del-port", filepath.Base(p))
		}
	})
	return n
}

// nad writes a vhost-user NetworkAttachmentDefinition (backed by the pool) into networkDir.
func (n *node) nad(name, config string) {
	y := fmt.Sprintf(`apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: %s
  annotations:
    k8s.v1.cni.cncf.io/resourceName: %s
spec:
  config: '%s'
`, name, resource, config)
	if err := os.WriteFile(filepath.Join(n.netDir, name+".yaml"), []byte(y), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

// newPod is kubelet's part: the device plugin allocates the slot (env, mount, device-info
// file) and the checkpoint records it for the pod.
func (n *node) newPod(name, slot string) *pod {
	t := n.t
	p := &pod{name: name, uid: "uid-" + name, cid: "cid-" + name, slot: slot}
	resp, err := n.dp.Allocate(context.Background(), &dp.AllocateRequest{ContainerRequests: []*dp.ContainerAllocateRequest{{DevicesIds: []string{slot}}}})
	if err != nil {
		t.Fatalf("allocate %s: %v", slot, err)
	}
	p.env = resp.ContainerResponses[0].Envs
	n.entries = append(n.entries, fmt.Sprintf(`{"PodUID":%q,"ContainerName":"app","ResourceName":%q,"DeviceIDs":{"-1":[%q]}}`, p.uid, resource, slot))
	cp := `{"Data":{"PodDeviceEntries":[` + strings.Join(n.entries, ",") + `]},"Checksum":0}`
	if err := os.WriteFile(n.checkpoint, []byte(cp), 0o644); err != nil {
		t.Fatal(err)
	}
	if p.netns, err = testutils.NewNS(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.netns.Close(); testutils.UnmountNS(p.netns) })
	return p
}

func (n *node) rt(p *pod, networks string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: p.cid, NetNS: p.netns.Path(), IfName: "eth0", Args: [][2]string{
		{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", p.name}, {"K8S_POD_UID", p.uid},
		{"MULTINET_NETWORKS", networks}}}
}

func (n *node) add(p *pod, networks string) error {
	return n.host.Do(func(ns.NetNS) error {
		_, err := n.cni.AddNetworkList(context.Background(), n.list, n.rt(p, networks))
		return err
	})
}

func (n *node) del(p *pod, networks string) error {
	return n.host.Do(func(ns.NetNS) error { return n.cni.DelNetworkList(context.Background(), n.list, n.rt(p, networks)) })
}

func (n *node) check(p *pod, networks string) error {
	return n.host.Do(func(ns.NetNS) error { return n.cni.CheckNetworkList(context.Background(), n.list, n.rt(p, networks)) })
}

func (n *node) hostSocket(slot string) string { return filepath.Join(n.pool, slot, "sock") }

// status is the pod's network-status as the meta-plugin published it.
func (n *node) status(p *pod) []nadv1.NetworkStatus {
	b, err := os.ReadFile(filepath.Join(n.dir, "cache", "status", p.cid+".json"))
	if err != nil {
		n.t.Fatal(err)
	}
	var st []nadv1.NetworkStatus
	if err := json.Unmarshal(b, &st); err != nil {
		n.t.Fatal(err)
	}
	return st
}

// dpdkArgs is what the pod's entrypoint runs: multinetctl dpdk-args over the downward-API file
// (network-status, as kubelet writes annotations) and the container's env.
func (n *node) dpdkArgs(p *pod) []string {
	t := n.t
	b, err := os.ReadFile(filepath.Join(n.dir, "cache", "status", p.cid+".json"))
	if err != nil {
		t.Fatal(err)
	}
	annot := filepath.Join(n.dir, p.name+"-annotations")
	if err := os.WriteFile(annot, []byte(fmt.Sprintf("%s=%q\n", nadv1.NetworkStatusAnnot, b)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binDir+"/multinetctl", "dpdk-args", "--annotations", annot, "-o", "lines")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range p.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dpdk-args: %v: %s", err, stderr.String())
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// testpmd is one pod's DPDK application: virtio-user on the slot's socket, in the pod's netns,
// driven through its interactive prompt so forwarding can stop while the port stays connected
// (OVS reports no counters for a vhost-user port whose application has gone).
type testpmd struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *syncBuffer
	done chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func startTestpmd(t testing.TB, p *pod, eal []string, mode string) *testpmd {
	// testpmd printf()s its statistics: line-buffered (stdbuf), or they sit in its buffer
	// while stdout is a pipe.
	args := append([]string{"--net=" + p.netns.Path(), "stdbuf", "-oL", "dpdk-testpmd", "-l", "0,1", "--no-huge", "-m", "512",
		"--file-prefix=" + p.name}, eal...)
	args = append(args, "--", "-i", "--total-num-mbufs=4096", "--forward-mode="+mode)
	tp := &testpmd{cmd: exec.Command("nsenter", args...), out: &syncBuffer{}, done: make(chan error, 1)}
	tp.cmd.Stdout, tp.cmd.Stderr = tp.out, tp.out
	var err error
	if tp.in, err = tp.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := tp.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { tp.done <- tp.cmd.Wait() }()
	t.Cleanup(func() { tp.quit(t) })
	return tp
}

// command types a line at the prompt and waits until the output has grown a match of want.
func (tp *testpmd) command(t testing.TB, line string, want *regexp.Regexp) string {
	t.Helper()
	before := len(tp.out.String())
	if _, err := io.WriteString(tp.in, line+"\n"); err != nil {
		t.Fatalf("testpmd %q: %v\n%s", line, err, tp.out.String())
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if out := tp.out.String(); want.MatchString(out[before:]) {
			return out[before:]
		}
		select {
		case err := <-tp.done:
			t.Fatalf("testpmd exited (%v) after %q:\n%s", err, line, tp.out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("testpmd: no %s after %q:\n%s", want, line, tp.out.String())
	return ""
}

// quit ends testpmd at its prompt, or kills it if it does not go.
func (tp *testpmd) quit(t testing.TB) {
	if tp.cmd.ProcessState != nil || tp.cmd.Process == nil {
		return
	}
	_, _ = io.WriteString(tp.in, "quit\n")
	tp.in.Close()
	select {
	case <-tp.done:
	case <-time.After(20 * time.Second):
		_ = tp.cmd.Process.Kill()
		<-tp.done
		t.Errorf("testpmd did not quit:\n%s", tp.out.String())
	}
}

// totals parses testpmd's final "Accumulated forward statistics" block.
func totals(t testing.TB, out string) (rx, tx int) {
	t.Helper()
	rx, tx, err := ovsdpdk.TestpmdTotals(out)
	if err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	return rx, tx
}

// waitLinkUp waits until OVS sees the pod's virtio-user driver on the port.
func waitLinkUp(t testing.TB, port string, tp *testpmd) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if out, _ := vsctl("get", "Interface", port, "link_state"); out == "up" {
			return
		}
		select {
		case err := <-tp.done:
			t.Fatalf("testpmd exited (%v) before port %s came up:\n%s", err, port, tp.out.String())
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Fatalf("port %s not up after 60s; testpmd:\n%s", port, tp.out.String())
}

// portOf finds the OVS port the plugin made for a slot, by its external_ids.
func portOf(t testing.TB, slot string) string {
	t.Helper()
	out := mustVsctl(t, "--bare", "--columns=name", "find", "Interface", "external_ids:multinet-slot="+slot)
	if out == "" || strings.Contains(out, "\n") {
		t.Fatalf("slot %s: want one OVS interface, got %q", slot, out)
	}
	return out
}

func TestTwoPodsPassPacketsThroughOVS(t *testing.T) {
	n := newNode(t)
	a, b := n.newPod("poda", "vhost-0"), n.newPod("podb", "vhost-1")
	// A stale socket from an earlier pod in b's slot: a server-mode testpmd would fail on it.
	l, err := net.Listen("unix", n.hostSocket("vhost-1"))
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()

	for _, p := range []*pod{a, b} {
		if err := n.add(p, "vhu-net"); err != nil {
			t.Fatalf("ADD %s: %v", p.name, err)
		}
	}
	pa, pb := portOf(t, "vhost-0"), portOf(t, "vhost-1")
	for _, c := range []struct{ port, slot, cid string }{{pa, "vhost-0", a.cid}, {pb, "vhost-1", b.cid}} {
		if got := mustVsctl(t, "port-to-br", c.port); got != bridge {
			t.Errorf("port %s on %q, want %s", c.port, got, bridge)
		}
		if got := mustVsctl(t, "get", "Interface", c.port, "type"); got != "dpdkvhostuserclient" {
			t.Errorf("port %s type %s", c.port, got)
		}
		if got := mustVsctl(t, "get", "Interface", c.port, "options:vhost-server-path"); got != strconv.Quote(n.hostSocket(c.slot)) {
			t.Errorf("port %s vhost-server-path %s, want %s", c.port, got, n.hostSocket(c.slot))
		}
		if got := mustVsctl(t, "get", "Port", c.port, "tag"); got != strconv.Itoa(vlan) {
			t.Errorf("port %s tag %s, want %d", c.port, got, vlan)
		}
		if got := mustVsctl(t, "get", "Interface", c.port, "mtu_request"); got != "1500" {
			t.Errorf("port %s mtu_request %s", c.port, got)
		}
		if got := mustVsctl(t, "get", "Interface", c.port, "external_ids:multinet-container-id"); got != strconv.Quote(c.cid) && got != c.cid {
			t.Errorf("port %s container id %s, want %s", c.port, got, c.cid)
		}
	}
	if _, err := os.Lstat(n.hostSocket("vhost-1")); !os.IsNotExist(err) {
		t.Fatalf("the stale socket in slot vhost-1 is still there (%v)", err)
	}

	// network-status carries the slot as the pod sees it.
	var vhu *nadv1.NetworkStatus
	for i, s := range n.status(a) {
		if s.Interface == "net1" {
			vhu = &n.status(a)[i]
		}
	}
	if vhu == nil || vhu.DeviceInfo == nil || vhu.DeviceInfo.Type != nadv1.DeviceInfoTypeVHostUser || vhu.DeviceInfo.VhostUser == nil ||
		vhu.DeviceInfo.VhostUser.Mode != "server" || vhu.DeviceInfo.VhostUser.Path != n.hostSocket("vhost-0") {
		t.Fatalf("network-status net1: %+v", vhu)
	}

	if err := n.check(a, "vhu-net"); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	// Someone retags the port behind multinet's back: CHECK says what differs.
	mustVsctl(t, "set", "Port", pa, "tag=200")
	if err := n.check(a, "vhu-net"); err == nil || !strings.Contains(err.Error(), "vlan tag is 200") {
		t.Fatalf("CHECK after retag: %v", err)
	}
	mustVsctl(t, "set", "Port", pa, fmt.Sprintf("tag=%d", vlan))

	// The pods' applications, started with what dpdk-args prints for them.
	eal := map[*pod][]string{}
	for _, p := range []*pod{a, b} {
		eal[p] = n.dpdkArgs(p)
		want := []string{"--vdev", fmt.Sprintf("net_virtio_user0,path=%s,server=1", n.hostSocket(p.slot)), "--no-pci"}
		if strings.Join(eal[p], " ") != strings.Join(want, " ") {
			t.Fatalf("dpdk-args for %s: %q, want %q", p.name, eal[p], want)
		}
	}
	r := runTraffic(t, a, b, pa, pb, eal, 4*time.Second)
	t.Logf("testpmd sent %d, OVS took in %d on %s and sent %d on %s (%d dropped: receiver's ring full), testpmd received %d",
		r.sent, r.ovsIn, pa, r.ovsOut, pb, r.ovsDrop, r.received)
	if r.received < 1000 {
		t.Fatalf("receiver counted %d packets; want at least 1000\nsender:\n%s\nreceiver:\n%s", r.received, r.txOut, r.rxOut)
	}
	if r.ovsOut != r.received {
		t.Errorf("OVS sent %d packets to %s, the receiver counted %d", r.ovsOut, pb, r.received)
	}
	// Every packet OVS took from the sender went to the receiver or was dropped at its full ring
	// (the bridge floods to the LOCAL port as well, which does not count here).
	if r.ovsIn != r.ovsOut+r.ovsDrop || r.ovsIn > r.sent {
		t.Errorf("OVS received %d on %s, sent %d + dropped %d on %s, sender sent %d: want received = sent + dropped <= sender's", r.ovsIn, pa, r.ovsOut, r.ovsDrop, pb, r.sent)
	}

	for _, p := range []*pod{a, b} {
		if err := n.del(p, "vhu-net"); err != nil {
			t.Fatalf("DEL %s: %v", p.name, err)
		}
	}
	if ports := vhuPorts(t); len(ports) != 0 {
		t.Fatalf("ports left after DEL: %v", ports)
	}
	for _, s := range []string{"vhost-0", "vhost-1"} {
		if _, err := os.Lstat(n.hostSocket(s)); !os.IsNotExist(err) {
			t.Errorf("slot %s socket left after DEL (%v)", s, err)
		}
	}
	cni, _ := filepath.Glob(filepath.Join(n.dir, "devinfo", "cni", "*"))
	if len(cni) != 0 {
		t.Errorf("device-info files left after DEL: %v", cni)
	}
}

// plainNAD writes a NAD with no resource behind it.
func (n *node) plainNAD(name, config string) {
	y := fmt.Sprintf("apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: %s\nspec:\n  config: '%s'\n", name, config)
	if err := os.WriteFile(filepath.Join(n.netDir, name+".yaml"), []byte(y), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

// assertNothingLeft checks what a failed ADD may not leave: a port, the pod's records, its
// device-info file.
func (n *node) assertNothingLeft(p *pod, keepPorts int) {
	t := n.t
	t.Helper()
	if ports := vhuPorts(t); len(ports) != keepPorts {
		t.Errorf("after the failed ADD of %s: ports %v, want %d", p.name, ports, keepPorts)
	}
	if recs, _ := filepath.Glob(filepath.Join(n.dir, "state", "vhostuser", "cache", p.cid+"-*")); len(recs) != 0 {
		t.Errorf("attachment records left: %v", recs)
	}
	if files, _ := filepath.Glob(filepath.Join(n.dir, "devinfo", "cni", "*"+p.cid+"*")); len(files) != 0 {
		t.Errorf("device-info left: %v", files)
	}
	// The runtime DELs a pod whose ADD failed: that must succeed and change nothing.
	if err := n.del(p, "vhu-net"); err != nil {
		t.Errorf("DEL after the failed ADD: %v", err)
	}
}

// A failure at each step of ADD leaves no port: the netconf, the bridge, the slot's owner,
// ovs-vswitchd's verdict on the port, the device-info file, and a later network of the pod.
func TestFailedAddLeavesNoPort(t *testing.T) {
	vhu := func(extra string) string {
		return fmt.Sprintf(`{"cniVersion":"1.0.0","name":"vhu-net","type":"vhostuser","bridge":%q,"vlan":%d,"ovsdbSocket":%q%s}`, bridge, vlan, ovsDB, extra)
	}
	t.Run("netconf", func(t *testing.T) {
		n := newNode(t)
		n.nad("vhu-net", strings.Replace(vhu(""), `"vlan":100`, `"vlan":5000`, 1))
		p := n.newPod("p1", "vhost-0")
		if err := n.add(p, "vhu-net"); err == nil || !strings.Contains(err.Error(), `field "vlan"`) {
			t.Fatalf("ADD: %v", err)
		}
		n.assertNothingLeft(p, 0)
	})
	t.Run("bridge", func(t *testing.T) {
		n := newNode(t)
		n.nad("vhu-net", strings.Replace(vhu(""), `"bridge":"`+bridge+`"`, `"bridge":"br-nope"`, 1))
		p := n.newPod("p1", "vhost-0")
		if err := n.add(p, "vhu-net"); err == nil || !strings.Contains(err.Error(), "br-nope not found") {
			t.Fatalf("ADD: %v", err)
		}
		n.assertNothingLeft(p, 0)
	})
	t.Run("slot in use", func(t *testing.T) {
		n := newNode(t)
		a, c := n.newPod("pa", "vhost-0"), n.newPod("pc", "vhost-0")
		if err := n.add(a, "vhu-net"); err != nil {
			t.Fatal(err)
		}
		if err := n.add(c, "vhu-net"); err == nil || !strings.Contains(err.Error(), "in use by container "+a.cid) {
			t.Fatalf("second pod on one slot: %v", err)
		}
		n.assertNothingLeft(c, 1)
		if got := mustVsctl(t, "get", "Interface", portOf(t, "vhost-0"), "external_ids:multinet-container-id"); strings.Trim(got, `"`) != a.cid {
			t.Fatalf("the slot's port now belongs to %s, want %s", got, a.cid)
		}
		if err := n.check(a, "vhu-net"); err != nil {
			t.Fatalf("the first pod's attachment after the refused one: %v", err)
		}
		// The port removed behind multinet's back: CHECK says so, DEL still succeeds.
		pa := portOf(t, "vhost-0")
		mustVsctl(t, "del-port", pa)
		if err := n.check(a, "vhu-net"); err == nil || !strings.Contains(err.Error(), "port "+pa+" is missing from OVS") {
			t.Fatalf("CHECK without the port: %v", err)
		}
		if err := n.del(a, "vhu-net"); err != nil {
			t.Fatal(err)
		}
		if ports := vhuPorts(t); len(ports) != 0 {
			t.Fatalf("ports left: %v", ports)
		}
	})
	t.Run("vswitchd refuses the port", func(t *testing.T) {
		n := newNode(t)
		// A kernel-datapath bridge cannot take a DPDK port: OVSDB accepts the transaction,
		// ovs-vswitchd then gives the interface no ofport.
		mustVsctl(t, "--may-exist", "add-br", "br-sys")
		t.Cleanup(func() { vsctl("--if-exists", "del-br", "br-sys") })
		n.nad("vhu-net", strings.Replace(vhu(""), `"bridge":"`+bridge+`"`, `"bridge":"br-sys"`, 1))
		p := n.newPod("p1", "vhost-0")
		if err := n.add(p, "vhu-net"); err == nil || !strings.Contains(err.Error(), "ovs-vswitchd refused port") {
			t.Fatalf("ADD: %v", err)
		}
		n.assertNothingLeft(p, 0)
	})
	t.Run("device-info", func(t *testing.T) {
		n := newNode(t)
		// The CNI device-info folder is a file: the last host step of ADD fails.
		if err := os.MkdirAll(filepath.Join(n.dir, "devinfo"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(n.dir, "devinfo", "cni"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		p := n.newPod("p1", "vhost-0")
		if err := n.add(p, "vhu-net"); err == nil || !strings.Contains(err.Error(), "device-info") {
			t.Fatalf("ADD: %v", err)
		}
		n.assertNothingLeft(p, 0)
	})
	t.Run("a later network", func(t *testing.T) {
		n := newNode(t)
		n.plainNAD("bad-net", `{"cniVersion":"1.0.0","name":"bad-net","type":"macvlan","master":"nosuchlink0"}`)
		p := n.newPod("p1", "vhost-0")
		if err := n.add(p, "vhu-net,bad-net"); err == nil || !strings.Contains(err.Error(), "bad-net") {
			t.Fatalf("ADD: %v", err)
		}
		n.assertNothingLeft(p, 0)
	})
}

type traffic struct {
	sent, ovsIn, ovsOut, ovsDrop, received int
	txOut, rxOut                           string
}

var (
	startedRe = ovsdpdk.TestpmdStarted
	stoppedRe = ovsdpdk.TestpmdStopped
)

// runTraffic starts the receiver on b, then the sender on a, forwards for d, stops the sender,
// lets OVS and the receiver drain, stops the receiver, and reads both sides' counters while the
// ports are still connected.
func runTraffic(t testing.TB, a, b *pod, pa, pb string, eal map[*pod][]string, d time.Duration) traffic {
	t.Helper()
	rx := startTestpmd(t, b, eal[b], "rxonly")
	waitLinkUp(t, pb, rx)
	tx := startTestpmd(t, a, eal[a], "txonly")
	waitLinkUp(t, pa, tx)
	in0, _, _ := portStats(t, pa)
	_, out0, drop0 := portStats(t, pb)
	rx.command(t, "start", startedRe)
	tx.command(t, "start", startedRe)
	time.Sleep(d)
	var r traffic
	r.txOut = tx.command(t, "stop", stoppedRe)
	time.Sleep(1500 * time.Millisecond)
	r.rxOut = rx.command(t, "stop", stoppedRe)
	in1, _, _ := portStats(t, pa)
	_, out1, drop1 := portStats(t, pb)
	r.ovsIn, r.ovsOut, r.ovsDrop = in1-in0, out1-out0, drop1-drop0
	_, r.sent = totals(t, r.txOut)
	r.received, _ = totals(t, r.rxOut)
	tx.quit(t)
	rx.quit(t)
	return r
}

// A pod whose netns is gone without its DEL (a crashed node agent, a lost DEL) does not keep
// its slot forever: the next pod given the slot takes it over, port and all.
func TestOrphanedSlotIsTakenOver(t *testing.T) {
	n := newNode(t)
	a, c := n.newPod("pa", "vhost-0"), n.newPod("pc", "vhost-0")
	if err := n.add(a, "vhu-net"); err != nil {
		t.Fatal(err)
	}
	old, _ := filepath.Glob(filepath.Join(n.dir, "devinfo", "cni", "*"+a.cid+"*"))
	if len(old) != 1 {
		t.Fatalf("device-info of %s: %v", a.name, old)
	}
	a.netns.Close()
	if err := testutils.UnmountNS(a.netns); err != nil {
		t.Fatal(err)
	}
	if err := n.add(c, "vhu-net"); err != nil {
		t.Fatalf("ADD on the orphaned slot: %v", err)
	}
	if got := mustVsctl(t, "get", "Interface", portOf(t, "vhost-0"), "external_ids:multinet-container-id"); strings.Trim(got, `"`) != c.cid {
		t.Fatalf("the slot's port belongs to %s, want %s", got, c.cid)
	}
	if _, err := os.Stat(old[0]); !os.IsNotExist(err) {
		t.Errorf("the orphan's device-info %s is still there (%v)", old[0], err)
	}
	// The orphan's late DEL must not take the port from its new owner.
	if err := n.del(a, "vhu-net"); err != nil {
		t.Fatalf("late DEL of the orphan: %v", err)
	}
	if err := n.check(c, "vhu-net"); err != nil {
		t.Fatalf("the new owner's attachment after the orphan's late DEL: %v", err)
	}
	if err := n.del(c, "vhu-net"); err != nil {
		t.Fatal(err)
	}
	if ports := vhuPorts(t); len(ports) != 0 {
		t.Fatalf("ports left: %v", ports)
	}
}

// Two ADDs racing for one slot (a double allocation, a retried ADD) never both win: the slot's
// flock and ownership record let exactly one through, and the loser leaves nothing behind.
func TestConcurrentAddsOnOneSlot(t *testing.T) {
	n := newNode(t)
	a, c := n.newPod("ra", "vhost-0"), n.newPod("rc", "vhost-0")
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"vhu-net","type":"vhostuser","deviceID":"vhost-0","bridge":%q,"ovsdbSocket":%q}`, bridge, ovsDB)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, p := range []*pod{a, c} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(binDir + "/vhostuser")
			cmd.Env = append(os.Environ(), "CNI_COMMAND=ADD", "CNI_CONTAINERID="+p.cid, "CNI_NETNS="+p.netns.Path(), "CNI_IFNAME=net1", "CNI_PATH="+binDir)
			cmd.Stdin = strings.NewReader(conf)
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("%v: %s", err, out)
			}
		}()
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) {
		t.Fatalf("want exactly one ADD to win: %v / %v", errs[0], errs[1])
	}
	winner, loser, lost := a, c, errs[1]
	if errs[0] != nil {
		winner, loser, lost = c, a, errs[0]
	}
	if !strings.Contains(lost.Error(), "in use by container "+winner.cid) {
		t.Errorf("the loser's error: %v", lost)
	}
	if ports := vhuPorts(t); len(ports) != 1 {
		t.Fatalf("ports: %v, want the winner's only", ports)
	}
	if got := mustVsctl(t, "get", "Interface", portOf(t, "vhost-0"), "external_ids:multinet-container-id"); strings.Trim(got, `"`) != winner.cid {
		t.Fatalf("port belongs to %s, want %s", got, winner.cid)
	}
	if recs, _ := filepath.Glob(filepath.Join(n.dir, "state", "vhostuser", "cache", loser.cid+"-*")); len(recs) != 0 {
		t.Errorf("the loser left records: %v", recs)
	}
}

// runPlugin execs the vhostuser binary as a runtime does.
func runPlugin(t *testing.T, command, cid, netns, conf string) error {
	t.Helper()
	cmd := exec.Command(binDir + "/vhostuser")
	cmd.Env = append(os.Environ(), "CNI_COMMAND="+command, "CNI_CONTAINERID="+cid, "CNI_NETNS="+netns, "CNI_IFNAME=net1", "CNI_PATH="+binDir)
	cmd.Stdin = strings.NewReader(conf)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", command, err, out)
	}
	return nil
}

// GC (CNI 1.1) releases the attachments the runtime no longer lists: their ports go, the
// listed ones stay.
func TestGCReleasesAttachmentsTheRuntimeForgot(t *testing.T) {
	n := newNode(t)
	keep, gone := n.newPod("gk", "vhost-0"), n.newPod("gg", "vhost-1")
	for _, p := range []*pod{keep, gone} {
		conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"vhu-net","type":"vhostuser","deviceID":%q,"bridge":%q,"ovsdbSocket":%q}`, p.slot, bridge, ovsDB)
		if err := runPlugin(t, "ADD", p.cid, p.netns.Path(), conf); err != nil {
			t.Fatal(err)
		}
	}
	gc := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"vhu-net","type":"vhostuser","bridge":%q,"ovsdbSocket":%q,
		"cni.dev/valid-attachments":[{"containerID":%q,"ifname":"net1"}]}`, bridge, ovsDB, keep.cid)
	if err := runPlugin(t, "GC", "", "", gc); err != nil {
		t.Fatal(err)
	}
	if ports := vhuPorts(t); len(ports) != 1 || filepath.Base(ports[0]) != portOf(t, "vhost-0") {
		t.Fatalf("after GC: ports %v, want only %s's", ports, keep.name)
	}
	if _, err := os.Lstat(filepath.Join(n.dir, "state", "vhostuser", "cache", gone.cid+"-net1.json")); !os.IsNotExist(err) {
		t.Fatalf("GC left %s's record (%v)", gone.name, err)
	}
}
