package agent_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	"github.com/vishvananda/netlink"

	"github.com/multinet-io/multinet/internal/cniwire"
	"github.com/multinet-io/multinet/internal/netnstest"
	"github.com/multinet-io/multinet/pci/pcitest"
)

// Debian's reference plugins (containernetworking-plugins, installed by hack/deps.sh).
const refPlugins = "/usr/lib/cni"

// binDir has multinetd, multinet-shim and the thin multinet; sriovDir the sriov binary, on the
// runtime's path only where a test wants it exec'd (the agent runs it in-process).
var binDir, sriovDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "multinetd-bin")
	if err != nil {
		panic(err)
	}
	binDir, sriovDir = filepath.Join(dir, "bin"), filepath.Join(dir, "sriov")
	for _, c := range [][]string{{"-o", binDir + "/", "../cmd/multinetd", "../cmd/multinet-shim", "../cmd/multinet"}, {"-o", sriovDir + "/", "../cmd/sriov"}} {
		if out, err := exec.Command("go", append([]string{"build"}, c...)...).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// node is a simulated node: a private netns as the host (a veth "eth0" as macvlan master), the
// bridge conflist as the cluster network, NAD manifests in a folder (standalone mode), and the
// agent started as a process in that netns, as a DaemonSet pod with hostNetwork would be.
type node struct {
	t                                          *testing.T
	host                                       ns.NetNS
	dir, confDir, netDir, cacheDir, ipamDir    string
	rtCache, socket, metrics, sysRoot, stateDr string
	agent                                      *exec.Cmd
	agentLog                                   *os.File
	// wrap runs the agent under this command (its argv follows), e.g. in its own mount namespace.
	wrap []string
}

func newNode(t *testing.T) *node {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, bridges and macvlans")
	}
	if _, err := os.Stat(filepath.Join(refPlugins, "bridge")); err != nil {
		t.Skipf("reference CNI plugins missing (%v): run hack/deps.sh", err)
	}
	host, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Close(); testutils.UnmountNS(host) })
	d := t.TempDir()
	n := &node{t: t, host: host, dir: d, confDir: filepath.Join(d, "net.d"), netDir: filepath.Join(d, "networks"),
		cacheDir: filepath.Join(d, "cache"), ipamDir: filepath.Join(d, "ipam"), rtCache: filepath.Join(d, "rtcache"),
		socket: filepath.Join(d, "run", "multinet.sock"), stateDr: filepath.Join(d, "state")}
	for _, p := range []string{n.confDir, n.netDir} {
		os.MkdirAll(p, 0o755)
	}
	t.Setenv("MULTINET_DEVINFO_DIR", filepath.Join(d, "devinfo"))
	err = host.Do(func(ns.NetNS) error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0peer"}); err != nil {
			return err
		}
		l, _ := netlink.LinkByName("eth0")
		lo, _ := netlink.LinkByName("lo")
		netlink.LinkSetUp(lo)
		return netlink.LinkSetUp(l)
	})
	if err != nil {
		t.Fatal(err)
	}
	n.write(n.confDir, "10-bridge.conflist", fmt.Sprintf(`{
  "cniVersion": "1.0.0", "name": "cbr0",
  "plugins": [
    {"type": "bridge", "bridge": "mncbr0", "isGateway": true,
     "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": "10.244.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]}`, n.ipamDir))
	n.nad("default", "macvlan-conf", fmt.Sprintf(`{"cniVersion": "0.3.0", "name": "macvlan-conf", "type": "macvlan", "master": "eth0", "mode": "bridge",
	  "ipam": {"type": "host-local", "dataDir": %q, "subnet": "10.10.0.0/24"}}`, n.ipamDir), nil)
	t.Cleanup(n.stopAgent)
	return n
}

func (n *node) write(dir, name, content string) string {
	n.t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		n.t.Fatal(err)
	}
	return p
}

func (n *node) nad(namespace, name, config string, annotations map[string]string) {
	n.t.Helper()
	nad := nadv1.NetworkAttachmentDefinition{}
	nad.APIVersion, nad.Kind = "k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition"
	nad.Namespace, nad.Name, nad.Annotations = namespace, name, annotations
	nad.Spec.Config = config
	b, _ := json.Marshal(nad)
	n.write(n.netDir, namespace+"-"+name+".json", string(b))
}

// conf is the node's conflist: the shim (thick) or the meta-plugin itself (thin).
func (n *node) conf(typ string, extra map[string]interface{}) []byte {
	plugin := map[string]interface{}{"type": typ, "clusterNetwork": filepath.Join(n.confDir, "10-bridge.conflist"),
		"cacheDir": n.cacheDir, "networkDir": n.netDir, "capabilities": map[string]bool{"portMappings": true}}
	if typ == "multinet-shim" {
		plugin["socket"] = n.socket
	}
	for k, v := range extra {
		plugin[k] = v
	}
	b, _ := json.Marshal(map[string]interface{}{"cniVersion": "1.1.0", "name": "multinet-cni-network", "plugins": []interface{}{plugin}})
	return b
}

// startAgent runs multinetd in the node's netns, with its sriov plugin over sysRoot (when set).
func (n *node) startAgent(extra ...string) {
	n.t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0") // a free port number (the agent listens in the node's netns)
	if err != nil {
		n.t.Fatal(err)
	}
	n.metrics = l.Addr().String()
	l.Close()
	args := append([]string{"--no-api", "--socket", n.socket, "--metrics-addr", n.metrics, "--sriov-state-dir", n.stateDr,
		"--pools-file", filepath.Join(n.dir, "no-device-plugin", "pools.json"), "--log-dir", filepath.Join(n.dir, "log")}, extra...)
	if n.sysRoot != "" {
		args = append(args, "--sysfs-root", n.sysRoot)
	}
	n.agentLog, _ = os.Create(filepath.Join(n.dir, fmt.Sprintf("multinetd-%d.log", time.Now().UnixNano())))
	argv := append(append(append([]string{}, n.wrap...), filepath.Join(binDir, "multinetd")), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = n.agentLog, n.agentLog
	if err := n.host.Do(func(ns.NetNS) error { return cmd.Start() }); err != nil {
		n.t.Fatal(err)
	}
	n.agent = cmd
	for i := 0; i < 200; i++ {
		if c, err := net.Dial("unix", n.socket); err == nil {
			c.Close()
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	n.t.Fatalf("multinetd did not listen on %s:\n%s", n.socket, n.log())
}

func (n *node) log() string {
	if n.agentLog == nil {
		return ""
	}
	b, _ := os.ReadFile(n.agentLog.Name())
	return string(b)
}

// stopAgent sends SIGTERM and waits for the agent to exit.
func (n *node) stopAgent() {
	if n.agent == nil {
		return
	}
	n.agent.Process.Signal(syscall.SIGTERM)
	n.agent.Wait()
	n.agent = nil
	if n.t.Failed() {
		n.t.Logf("multinetd log:\n%s", n.log())
	}
}

// scrape reads the agent's /metrics from inside the node's netns.
func (n *node) scrape(path string) (int, string) {
	n.t.Helper()
	var code int
	var body []byte
	err := n.host.Do(func(ns.NetNS) error {
		c, err := net.Dial("tcp", n.metrics)
		if err != nil {
			return err
		}
		defer c.Close()
		req, _ := http.NewRequest("GET", "http://"+n.metrics+path, nil)
		if err := req.Write(c); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		code = resp.StatusCode
		body, err = io.ReadAll(resp.Body)
		return err
	})
	if err != nil {
		n.t.Fatalf("GET %s: %v", path, err)
	}
	return code, string(body)
}

type pod struct {
	n    *node
	ns   ns.NetNS
	rt   *libcni.RuntimeConf
	list *libcni.NetworkConfigList
	cni  *libcni.CNIConfig
}

func (n *node) pod(name, networks string, conf []byte) *pod {
	n.t.Helper()
	pns, err := testutils.NewNS()
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { pns.Close(); testutils.UnmountNS(pns) })
	args := [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", name},
		{"K8S_POD_INFRA_CONTAINER_ID", "ctr-" + name}}
	if networks != "" {
		args = append(args, [2]string{"MULTINET_NETWORKS", networks})
	}
	p := &pod{n: n, ns: pns, rt: &libcni.RuntimeConf{ContainerID: "ctr-" + name, NetNS: pns.Path(), IfName: "eth0", Args: args},
		cni: libcni.NewCNIConfigWithCacheDir([]string{binDir, refPlugins}, n.rtCache, nil)}
	p.use(conf)
	return p
}

// use switches the conf the runtime runs (thin <-> thick, the upgrade path).
func (p *pod) use(conf []byte) {
	p.n.t.Helper()
	list, err := libcni.ConfListFromBytes(conf)
	if err != nil {
		p.n.t.Fatal(err)
	}
	p.list = list
}

func (p *pod) add() (*types100.Result, error) {
	var res types.Result
	err := p.n.host.Do(func(ns.NetNS) error {
		var err error
		res, err = p.cni.AddNetworkList(context.Background(), p.list, p.rt)
		return err
	})
	if err != nil {
		return nil, err
	}
	return types100.NewResultFromResult(res)
}

func (p *pod) del() error {
	return p.n.host.Do(func(ns.NetNS) error { return p.cni.DelNetworkList(context.Background(), p.list, p.rt) })
}

func (p *pod) check() error {
	return p.n.host.Do(func(ns.NetNS) error { return p.cni.CheckNetworkList(context.Background(), p.list, p.rt) })
}

// links returns the pod's interfaces (name -> IPv4 addresses).
func (p *pod) links() map[string][]string {
	p.n.t.Helper()
	return netnstest.Links(p.n.t, p.ns)
}

func (p *pod) status() []nadv1.NetworkStatus {
	p.n.t.Helper()
	b, err := os.ReadFile(filepath.Join(p.n.cacheDir, "status", p.rt.ContainerID+".json"))
	if err != nil {
		p.n.t.Fatalf("network-status: %v", err)
	}
	var st []nadv1.NetworkStatus
	if err := json.Unmarshal(b, &st); err != nil {
		p.n.t.Fatalf("network-status: %v\n%s", err, b)
	}
	return st
}

// leases lists host-local's reserved IPs (files named by IP in its dataDir).
func (n *node) leases() []string {
	var out []string
	filepath.Walk(n.ipamDir, func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && net.ParseIP(info.Name()) != nil {
			out = append(out, filepath.Base(filepath.Dir(path))+"/"+info.Name())
		}
		return nil
	})
	return out
}

func (n *node) cacheFiles() []string {
	m, _ := filepath.Glob(filepath.Join(n.cacheDir, "delegates", "*"))
	return m
}

// assertAttached checks what a user checks in the pod: eth0 on the cluster network, net1 on
// the macvlan network, both recorded in network-status.
func (p *pod) assertAttached() {
	p.n.t.Helper()
	links := p.links()
	if len(links["eth0"]) != 1 || !strings.HasPrefix(links["eth0"][0], "10.244.0.") || len(links["net1"]) != 1 || !strings.HasPrefix(links["net1"][0], "10.10.0.") {
		p.n.t.Fatalf("pod interfaces = %v, want eth0 in 10.244.0.0/24 and net1 in 10.10.0.0/24", links)
	}
	st := p.status()
	if len(st) != 2 || st[1].Name != "default/macvlan-conf" || st[1].Interface != "net1" {
		p.n.t.Fatalf("network-status = %+v", st)
	}
}

func (p *pod) assertGone() {
	p.n.t.Helper()
	if l := p.n.leases(); len(l) != 0 {
		p.n.t.Errorf("leases after DEL = %v", l)
	}
	if c := p.n.cacheFiles(); len(c) != 0 {
		p.n.t.Errorf("delegate cache after DEL = %v", c)
	}
}

// The runtime runs the shim; the shim hands the call to the agent over its socket; the pod gets
// its interfaces, DEL gives everything back, and the agent counts and times what it did.
func TestShimAgentOverSocket(t *testing.T) {
	n := newNode(t)
	n.startAgent()
	st, err := os.Stat(n.socket)
	if err != nil || st.Mode().Perm() != 0o600 || st.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket %s: %v %v, want a socket 0600", n.socket, st.Mode(), err)
	}
	if dst, _ := os.Stat(filepath.Dir(n.socket)); dst.Mode().Perm() != 0o700 {
		t.Fatalf("socket dir mode %v, want 0700", dst.Mode().Perm())
	}
	p := n.pod("web", "macvlan-conf", n.conf("multinet-shim", nil))
	res, err := p.add()
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IPs) != 1 || !strings.HasPrefix(res.IPs[0].Address.IP.String(), "10.244.0.") {
		t.Fatalf("ADD result %+v: want the cluster network's IP", res)
	}
	p.assertAttached()
	if err := p.check(); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	if err := p.del(); err != nil {
		t.Fatal(err)
	}
	p.assertGone()

	// A conf in API mode served by an agent without an API client fails, instead of attaching
	// the cluster network only.
	q := n.pod("api", "macvlan-conf", n.conf("multinet-shim", map[string]interface{}{"networkDir": nil, "kubeconfig": "/etc/kubeconfig"}))
	if _, err := q.add(); err == nil || !strings.Contains(err.Error(), "without an API client") {
		t.Errorf("API-mode conf on a --no-api agent: %v", err)
	}

	code, m := n.scrape("/metrics")
	for _, want := range []string{
		`multinet_cni_requests_total{command="ADD",result="ok"} 1`,
		`multinet_cni_requests_total{command="ADD",result="error"} 1`,
		`multinet_cni_requests_total{command="DEL",result="ok"} 1`,
		`multinet_cni_requests_total{command="CHECK",result="ok"} 1`,
		`multinet_cni_delegate_duration_seconds_count{command="ADD",inprocess="false",plugin="macvlan"} 1`,
		`multinet_cni_request_duration_seconds_count{command="ADD"} 2`,
		`multinet_cni_requests_in_flight 0`,
		`multinet_cni_requests_queued 0`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics (%d) lacks %s", code, want)
		}
	}
	if code, _ := n.scrape("/readyz"); code != 200 {
		t.Errorf("/readyz = %d", code)
	}
	if code, _ := n.scrape("/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
}

// A pod attached by the thin binary is deleted through the agent, and the other way round:
// the upgrade from thin to thick (and back) never strands a pod's IPs.
func TestThinAndThickDeleteEachOthersPods(t *testing.T) {
	n := newNode(t)
	n.startAgent()
	thin, thick := n.conf("multinet", nil), n.conf("multinet-shim", nil)

	a := n.pod("thin-added", "macvlan-conf", thin)
	if _, err := a.add(); err != nil {
		t.Fatal(err)
	}
	a.assertAttached()
	a.use(thick)
	if err := a.del(); err != nil {
		t.Fatalf("DEL through the agent of a thin-attached pod: %v", err)
	}
	a.assertGone()

	b := n.pod("thick-added", "macvlan-conf", thick)
	if _, err := b.add(); err != nil {
		t.Fatal(err)
	}
	b.assertAttached()
	b.use(thin)
	if err := b.del(); err != nil {
		t.Fatalf("thin DEL of an agent-attached pod: %v", err)
	}
	b.assertGone()
}

// DEL never depends on the agent: with it stopped, the shim deletes from the delegate cache.
func TestShimDelWithAgentStopped(t *testing.T) {
	n := newNode(t)
	n.startAgent()
	p := n.pod("web", "macvlan-conf", n.conf("multinet-shim", nil))
	if _, err := p.add(); err != nil {
		t.Fatal(err)
	}
	p.assertAttached()
	n.stopAgent()
	if _, err := os.Stat(n.socket); !os.IsNotExist(err) {
		t.Errorf("socket left after SIGTERM: %v", err)
	}
	start := time.Now()
	if err := p.del(); err != nil {
		t.Fatalf("DEL with the agent down: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("DEL with the agent down took %s: it waited for the agent", d)
	}
	p.assertGone()
	// The runtime's retry after a DEL that passed finds nothing and passes again.
	if err := p.del(); err != nil {
		t.Fatalf("second DEL: %v", err)
	}
}

// ADD waits for an agent that is not up yet (a node rebooting), bounded by agentWait.
func TestShimAddWaitsForAgent(t *testing.T) {
	n := newNode(t)
	short := n.pod("early", "macvlan-conf", n.conf("multinet-shim", map[string]interface{}{"agentWait": "300ms"}))
	_, err := short.add()
	var te *types.Error
	if err == nil || !strings.Contains(err.Error(), "multinetd did not answer") {
		t.Fatalf("ADD with no agent and agentWait 300ms: %v", err)
	} else if ok := asTypesError(err, &te); !ok || te.Code != types.ErrTryAgainLater {
		t.Errorf("error %v: want CNI code %d (try again later)", err, types.ErrTryAgainLater)
	}
	if l := n.leases(); len(l) != 0 {
		t.Errorf("leases after a refused ADD: %v", l)
	}

	p := n.pod("web", "macvlan-conf", n.conf("multinet-shim", nil))
	done := make(chan error, 1)
	go func() { _, err := p.add(); done <- err }()
	time.Sleep(700 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("ADD returned before the agent was up: %v", err)
	default:
	}
	n.startAgent()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ADD still waiting 30 s after the agent came up")
	}
	p.assertAttached()
	if err := p.del(); err != nil {
		t.Fatal(err)
	}
	p.assertGone()
}

func asTypesError(err error, te **types.Error) bool {
	for err != nil {
		if e, ok := err.(*types.Error); ok {
			*te = e
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

// The sriov delegate runs inside the agent (no sriov binary anywhere on the path): the pod
// gets the veth-backed VF as net1, DEL gives it back to the node under its own name.
func TestSriovInProcess(t *testing.T) {
	n := newNode(t)
	tree := pcitest.New(t)
	tree.AddPF(pcitest.PF{Address: "0000:00:02.0", Vendor: "8086", Device: "10c9", Driver: "igb", Netdev: "mnpf0", TotalVFs: 7})
	macs := map[string]string{}
	err := n.host.Do(func(ns.NetNS) error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "mnpf0"}, PeerName: "mnpf0p"}); err != nil {
			return err
		}
		for i := 0; i < 2; i++ {
			name := fmt.Sprintf("mnvf%d", i)
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
				return err
			}
			l, _ := netlink.LinkByName(name)
			macs[name] = l.Attrs().HardwareAddr.String()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		tree.AddVF(pcitest.VF{PF: "0000:00:02.0", Index: i, Address: fmt.Sprintf("0000:00:12.%d", i), Vendor: "8086", Device: "10ca",
			Driver: "igbvf", Netdev: fmt.Sprintf("mnvf%d", i)})
	}
	n.sysRoot = tree.Root
	n.startAgent()
	n.nad("default", "sriov-net", `{"cniVersion": "1.0.0", "type": "sriov",
	  "ipam": {"type": "host-local", "dataDir": "`+n.ipamDir+`", "subnet": "10.56.217.0/24"}}`, nil)
	p := n.pod("cnf", `[{"name": "sriov-net", "deviceID": "0000:00:12.1"}]`, n.conf("multinet-shim", nil))
	if _, err := p.add(); err != nil {
		t.Fatal(err)
	}
	links := p.links()
	if len(links["net1"]) != 1 || !strings.HasPrefix(links["net1"][0], "10.56.217.") {
		t.Fatalf("pod interfaces = %v, want net1 with an address from 10.56.217.0/24", links)
	}
	p.ns.Do(func(ns.NetNS) error {
		if l, err := netlink.LinkByName("net1"); err != nil || l.Attrs().HardwareAddr.String() != macs["mnvf1"] {
			t.Errorf("net1 is not the VF 0000:00:12.1 (mnvf1, %s): %v", macs["mnvf1"], err)
		}
		return nil
	})
	st := p.status()
	if len(st) != 2 || st[1].DeviceInfo == nil || st[1].DeviceInfo.Pci == nil || st[1].DeviceInfo.Pci.PciAddress != "0000:00:12.1" {
		t.Fatalf("network-status = %+v; want net1 with device-info pci 0000:00:12.1", st)
	}
	if _, m := n.scrape("/metrics"); !strings.Contains(m, `multinet_cni_delegate_duration_seconds_count{command="ADD",inprocess="true",plugin="sriov"} 1`) {
		t.Errorf("/metrics does not show an in-process sriov ADD")
	}
	if err := p.del(); err != nil {
		t.Fatal(err)
	}
	n.host.Do(func(ns.NetNS) error {
		if l, err := netlink.LinkByName("mnvf1"); err != nil || l.Attrs().HardwareAddr.String() != macs["mnvf1"] {
			t.Errorf("VF not back on the node as mnvf1 after DEL: %v", err)
		}
		return nil
	})
	p.assertGone()
}

// An agent that accepts the DEL and dies before answering (SIGKILL mid-call): the shim does
// the DEL itself, nothing is left.
func TestShimDelWhenAgentDiesMidCall(t *testing.T) {
	n := newNode(t)
	n.startAgent()
	p := n.pod("web", "macvlan-conf", n.conf("multinet-shim", nil))
	if _, err := p.add(); err != nil {
		t.Fatal(err)
	}
	n.stopAgent()
	// Stands in for the dying agent: takes the connection, reads the request, hangs up.
	l, err := net.Listen("unix", n.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	if err := p.del(); err != nil {
		t.Fatalf("DEL with the agent dying mid-call: %v", err)
	}
	p.assertGone()
}

// SIGTERM stops accepting but lets the call in flight finish: an ADD held by the readiness
// indicator completes once the indicator appears, and only then does the agent exit.
func TestSigtermFinishesInFlight(t *testing.T) {
	n := newNode(t)
	n.startAgent()
	ready := filepath.Join(n.dir, "cluster-network-ready")
	p := n.pod("web", "macvlan-conf", n.conf("multinet-shim", map[string]interface{}{"readinessIndicatorFile": ready}))
	done := make(chan error, 1)
	go func() { _, err := p.add(); done <- err }()
	time.Sleep(500 * time.Millisecond) // the ADD is in the agent, waiting for the indicator
	n.agent.Process.Signal(syscall.SIGTERM)
	exited := make(chan struct{})
	go func() { n.agent.Wait(); close(exited) }()
	time.Sleep(300 * time.Millisecond)
	select {
	case <-exited:
		t.Fatalf("agent exited with a call in flight:\n%s", n.log())
	default:
	}
	if _, err := os.Stat(n.socket); !os.IsNotExist(err) {
		t.Errorf("still accepting after SIGTERM: socket %v", err)
	}
	os.WriteFile(ready, nil, 0o644)
	if err := <-done; err != nil {
		t.Fatalf("in-flight ADD across SIGTERM: %v", err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("agent still running after its last call")
	}
	n.agent = nil
	p.assertAttached()
	if err := p.del(); err != nil { // the agent is gone: the shim's own DEL
		t.Fatal(err)
	}
	p.assertGone()
}

// The shim is killed (or the runtime gives up on it) while the agent runs its ADD: the agent
// cancels the call at once, and what the ADD had attached (eth0, net1 and their IPs) is
// removed, with the delegate cache; a delegate still running is stopped.
func TestShimHangupCancelsAddAndUndoes(t *testing.T) {
	n := newNode(t)
	slowDir := filepath.Join(n.dir, "slowbin")
	started, finished := filepath.Join(n.dir, "slow-started"), filepath.Join(n.dir, "slow-finished")
	os.MkdirAll(slowDir, 0o755)
	// A delegate that hangs in ADD: the third network, after eth0 and net1 are attached.
	n.write(slowDir, "mnslow", fmt.Sprintf(`#!/bin/sh
case "$CNI_COMMAND" in
ADD) touch %q; sleep 20 </dev/null >/dev/null 2>&1; touch %q; exit 1;;
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.3.1","1.0.0"]}';;
esac
exit 0
`, started, finished))
	os.Chmod(filepath.Join(slowDir, "mnslow"), 0o755)
	n.nad("default", "slow", `{"cniVersion": "0.3.1", "name": "slow", "type": "mnslow"}`, nil)
	n.startAgent()
	p := n.pod("web", "macvlan-conf,slow", n.conf("multinet-shim", nil))
	env := map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": p.rt.ContainerID, "CNI_NETNS": p.rt.NetNS, "CNI_IFNAME": "eth0",
		"CNI_PATH": strings.Join([]string{binDir, refPlugins, slowDir}, ":")}
	var args []string
	for _, kv := range p.rt.Args {
		args = append(args, kv[0]+"="+kv[1])
	}
	env["CNI_ARGS"] = strings.Join(args, ";")
	// The shim's stdin: the plugin's conf inside the list, as libcni hands it over.
	var plugin map[string]interface{}
	if err := json.Unmarshal(p.list.Plugins[0].Bytes, &plugin); err != nil {
		t.Fatal(err)
	}
	plugin["name"], plugin["cniVersion"] = p.list.Name, p.list.CNIVersion
	stdin, _ := json.Marshal(plugin)

	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: n.socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewEncoder(conn).Encode(&cniwire.Request{Env: env, Stdin: stdin}); err != nil {
		t.Fatal(err)
	}
	conn.CloseWrite()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Stat(started); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slow delegate never started:\n%s", n.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if l := p.links(); len(l["eth0"]) != 1 || len(l["net1"]) != 1 {
		t.Fatalf("before the hang-up the pod has %v, want eth0 and net1 attached", l)
	}
	hungUp := time.Now()
	conn.Close() // the shim is gone

	for {
		l := p.links()
		if len(l) == 0 && len(n.leases()) == 0 && len(n.cacheFiles()) == 0 {
			break
		}
		if time.Since(hungUp) > 8*time.Second {
			t.Fatalf("8 s after the hang-up: pod links %v, leases %v, cache %v (the ADD ran on):\n%s", l, n.leases(), n.cacheFiles(), n.log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(n.log(), "the shim hung up") {
		t.Errorf("agent log does not say the shim hung up:\n%s", n.log())
	}
	time.Sleep(500 * time.Millisecond)
	if _, err := os.Stat(finished); err == nil {
		t.Error("the slow delegate ran to its end: it was not stopped")
	}
}
