package meta_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	"github.com/vishvananda/netlink"

	"github.com/multinet-io/multinet/devpools"
	"github.com/multinet-io/multinet/internal/netnstest"
)

// Debian's reference plugins (containernetworking-plugins, installed by hack/deps.sh).
const refPlugins = "/usr/lib/cni"

var multinetBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.fuzz"); f != nil && f.Value.String() != "" {
		os.Exit(m.Run()) // fuzzing runs no plugin binary: skip the build
	}
	dir, err := os.MkdirTemp("", "multinet-bin")
	if err != nil {
		panic(err)
	}
	multinetBin = filepath.Join(dir, "multinet")
	// The sriov plugin's pool check reads the node's real pools file by default: a device
	// plugin running on this machine must not decide these tests (those of the check set it).
	os.Setenv(devpools.EnvPath, filepath.Join(dir, "no-pools.json"))
	// The SR-IOV CNI beside it: attachments of type sriov are delegated to it as on a node.
	out, err := exec.Command("go", "build", "-o", dir+"/", "../cmd/multinet", "../cmd/sriov").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build multinet and sriov: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// node is a simulated node: a private netns standing in for the host (with a dummy "eth0" as
// the macvlan master, as in the seed's macvlan-conf), a conf dir with the bridge conflist as
// the cluster network, and a folder of NAD manifests (standalone mode).
type node struct {
	t        *testing.T
	host     ns.NetNS
	dir      string
	confDir  string
	netDir   string
	cacheDir string
	ipamDir  string
	rtCache  string
	conf     []byte
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
		cacheDir: filepath.Join(d, "cache"), ipamDir: filepath.Join(d, "ipam"), rtCache: filepath.Join(d, "rtcache")}
	for _, p := range []string{n.confDir, n.netDir} {
		os.MkdirAll(p, 0o755)
	}
	t.Setenv("MULTINET_DEVINFO_DIR", filepath.Join(d, "devinfo"))
	err = host.Do(func(ns.NetNS) error {
		// A veth, not a dummy: some CI kernels are built without the dummy driver.
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
	n.conf = n.multinetConf(map[string]interface{}{"networkDir": n.netDir})
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

// multinetConf is the node's multinet conflist with extra plugin fields.
func (n *node) multinetConf(extra map[string]interface{}) []byte {
	plugin := map[string]interface{}{"type": "multinet", "clusterNetwork": filepath.Join(n.confDir, "10-bridge.conflist"),
		"cacheDir": n.cacheDir, "capabilities": map[string]bool{"portMappings": true}}
	for k, v := range extra {
		plugin[k] = v
	}
	b, _ := json.Marshal(map[string]interface{}{"cniVersion": "1.1.0", "name": "multinet-cni-network", "plugins": []interface{}{plugin}})
	return b
}

// nad writes a NAD manifest into the network folder.
func (n *node) nad(namespace, name, config string, annotations map[string]string) {
	n.t.Helper()
	nad := nadv1.NetworkAttachmentDefinition{}
	nad.APIVersion, nad.Kind = "k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition"
	nad.Namespace, nad.Name, nad.Annotations = namespace, name, annotations
	nad.Spec.Config = config
	b, _ := json.Marshal(nad)
	n.write(n.netDir, namespace+"-"+name+".json", string(b))
}

func (n *node) macvlanConf(name, subnet string) string {
	return fmt.Sprintf(`{"cniVersion": "0.3.0", "name": %q, "type": "macvlan", "master": "eth0", "mode": "bridge",
	  "ipam": {"type": "host-local", "dataDir": %q, "subnet": %q, "routes": [{"dst": "0.0.0.0/0"}], "gateway": %q}}`,
		name, n.ipamDir, subnet, strings.TrimSuffix(subnet, "0/24")+"1")
}

// pod is a pod sandbox: its netns and the runtime's view of it.
type pod struct {
	n    *node
	ns   ns.NetNS
	rt   *libcni.RuntimeConf
	list *libcni.NetworkConfigList
	cni  *libcni.CNIConfig
}

func (n *node) pod(name, networks string, extraArgs ...[2]string) *pod {
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
	args = append(args, extraArgs...)
	list, err := libcni.ConfListFromBytes(n.conf)
	if err != nil {
		n.t.Fatal(err)
	}
	return &pod{n: n, ns: pns, list: list,
		rt:  &libcni.RuntimeConf{ContainerID: "ctr-" + name, NetNS: pns.Path(), IfName: "eth0", Args: args},
		cni: libcni.NewCNIConfigWithCacheDir([]string{filepath.Dir(multinetBin), refPlugins}, n.rtCache, nil)}
}

// add runs ADD as a runtime does: the multinet binary executed from the host namespace.
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

// links returns the pod's interfaces (name -> IPv4 addresses), as `ip addr` in the pod shows.
func (p *pod) links() map[string][]string {
	p.n.t.Helper()
	return netnstest.Links(p.n.t, p.ns)
}

func (p *pod) defaultRoutes() []string {
	p.n.t.Helper()
	var out []string
	p.ns.Do(func(ns.NetNS) error {
		routes, _ := netlink.RouteList(nil, netlink.FAMILY_V4)
		for _, r := range routes {
			if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
				l, _ := netlink.LinkByIndex(r.LinkIndex)
				out = append(out, l.Attrs().Name+" via "+r.Gw.String())
			}
		}
		return nil
	})
	return out
}

// leases lists host-local's reserved IPs per network (files named by IP in its dataDir).
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

func testutils_unmount(t *testing.T, p *pod) {
	t.Helper()
	if err := testutils.UnmountNS(p.ns); err != nil {
		t.Fatal(err)
	}
}
