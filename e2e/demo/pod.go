package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
)

const macvlanNAD = `apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: macvlan-conf
spec:
  config: '{
      "cniVersion": "0.3.0",
      "type": "macvlan",
      "master": "eth0",
      "mode": "bridge",
      "ipam": {
        "type": "host-local",
        "dataDir": "%s",
        "subnet": "192.168.1.0/24",
        "rangeStart": "192.168.1.200",
        "rangeEnd": "192.168.1.216",
        "routes": [{"dst": "0.0.0.0/0"}],
        "gateway": "192.168.1.1"
      }
    }'
`

// podDemo attaches a pod on the simulated node the way containerd would: the multinet binary
// run with the CNI environment, the bridge conflist as the cluster network, the seed article's
// macvlan-conf NAD selected twice.
func podDemo(binDir, sysRoot string) error {
	if os.Geteuid() != 0 {
		fmt.Println("\n### a pod with eth0 + net1 + net2: skipped (needs root for network namespaces)")
		return nil
	}
	const plugins = "/usr/lib/cni"
	if _, err := os.Stat(filepath.Join(plugins, "macvlan")); err != nil {
		fmt.Println("\n### a pod with eth0 + net1 + net2: skipped (no reference CNI plugins; run hack/deps.sh)")
		return nil
	}
	dir, err := os.MkdirTemp("", "multinet-demo-pod-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	host, err := testutils.NewNS() // stands in for the node's namespace: the demo touches no real link
	if err != nil {
		return err
	}
	defer func() { host.Close(); testutils.UnmountNS(host) }()
	pod, err := testutils.NewNS()
	if err != nil {
		return err
	}
	defer func() { pod.Close(); testutils.UnmountNS(pod) }()
	err = host.Do(func(ns.NetNS) error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0peer"}); err != nil {
			return err
		}
		for _, n := range []string{"eth0", "eth0peer"} {
			l, _ := netlink.LinkByName(n)
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("node uplink: %w", err)
	}
	confDir, netDir, ipam := filepath.Join(dir, "net.d"), filepath.Join(dir, "networks"), filepath.Join(dir, "ipam")
	os.MkdirAll(confDir, 0o755)
	os.MkdirAll(netDir, 0o755)
	bridge := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "cbr0", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true,
   "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": "10.244.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}`, ipam)
	os.WriteFile(filepath.Join(confDir, "10-bridge.conflist"), []byte(bridge), 0o644)
	os.WriteFile(filepath.Join(netDir, "macvlan-conf.yaml"), []byte(fmt.Sprintf(macvlanNAD, ipam)), 0o644)

	fmt.Printf("\n### the node's CNI conf: multinet wraps the cluster network\n$ multinet config generate --conf-dir %s\n", confDir)
	out, err := exec.Command(filepath.Join(binDir, "multinet"), "config", "generate", "--conf-dir", confDir,
		"--cache-dir", filepath.Join(dir, "cache")).CombinedOutput()
	fmt.Print(string(out))
	if err != nil {
		return err
	}
	// Standalone mode: NADs from a folder instead of the API server.
	gen, _ := os.ReadFile(filepath.Join(confDir, "00-multinet.conflist"))
	var conf map[string]interface{}
	json.Unmarshal(gen, &conf)
	conf["plugins"].([]interface{})[0].(map[string]interface{})["networkDir"] = netDir
	gen, _ = json.MarshalIndent(conf, "", "  ")
	os.WriteFile(filepath.Join(confDir, "00-multinet.conflist"), gen, 0o644)
	fmt.Printf("%s\n\n### the NAD (the seed article's macvlan-conf), in %s\n%s", gen, netDir, fmt.Sprintf(macvlanNAD, ipam))

	list, err := libcni.ConfListFromBytes(gen)
	if err != nil {
		return err
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{binDir, plugins}, filepath.Join(dir, "runtime-cache"), nil)
	rt := &libcni.RuntimeConf{ContainerID: "demo-pod-1", NetNS: pod.Path(), IfName: "eth0", Args: [][2]string{
		{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "samplepod"},
		{"MULTINET_NETWORKS", "macvlan-conf,macvlan-conf"}}}
	fmt.Println("\n### CNI ADD for pod default/samplepod, annotation k8s.v1.cni.cncf.io/networks: macvlan-conf,macvlan-conf")
	err = host.Do(func(ns.NetNS) error {
		_, err := cni.AddNetworkList(context.Background(), list, rt)
		return err
	})
	if err != nil {
		return fmt.Errorf("ADD: %w", err)
	}
	fmt.Println("\n### inside the pod\n$ ip -br addr")
	pod.Do(func(ns.NetNS) error {
		out, _ := exec.Command("ip", "-br", "addr").CombinedOutput()
		fmt.Print(string(out))
		out, _ = exec.Command("ip", "route").CombinedOutput()
		fmt.Print("$ ip route\n" + string(out))
		return nil
	})
	status, _ := os.ReadFile(filepath.Join(dir, "cache", "status", "demo-pod-1.json"))
	fmt.Printf("\n### network-status (what the pod annotation k8s.v1.cni.cncf.io/network-status holds)\n%s\n", status)

	fmt.Println("\n### CNI DEL")
	err = host.Do(func(ns.NetNS) error { return cni.DelNetworkList(context.Background(), list, rt) })
	if err != nil {
		return fmt.Errorf("DEL: %w", err)
	}
	pod.Do(func(ns.NetNS) error {
		out, _ := exec.Command("ip", "-br", "link").CombinedOutput()
		fmt.Printf("$ ip -br link   (in the pod, after DEL)\n%s", out)
		return nil
	})
	leases, _ := filepath.Glob(filepath.Join(ipam, "*", "[0-9]*"))
	fmt.Printf("IP leases still held: %d\n", len(leases))
	return cnfDemo(binDir, sysRoot, dir, host)
}
