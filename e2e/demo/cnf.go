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

const dpConfig = `{"resourceList": [
  {"resourceName": "sriov_netdevice", "selectors": {"vendors": ["8086"], "drivers": ["igbvf"], "pfNames": ["enp0s2"]}},
  {"resourceName": "sriov_dpdk", "selectors": {"vendors": ["8086"], "drivers": ["vfio-pci"]}}
]}`

const sriovNADs = `apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: sriov-n3
  annotations:
    k8s.v1.cni.cncf.io/resourceName: intel.com/sriov_netdevice
spec:
  config: '{"cniVersion": "1.0.0", "type": "sriov", "logLevel": "error",
            "ipam": {"type": "host-local", "dataDir": "%[1]s", "subnet": "10.56.217.0/24"}}'
---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: sriov-dpdk
  annotations:
    k8s.v1.cni.cncf.io/resourceName: intel.com/sriov_dpdk
spec:
  config: '{"cniVersion": "1.0.0", "type": "sriov", "logLevel": "error"}'
`

// cnfDemo is a 5G-style pod on the simulated SR-IOV node after the policy: the device plugin
// pools the VFs by driver, kubelet (here its checkpoint file) gave the pod one VF of each pool,
// and multinet hands the netdev VF to the sriov CNI on n3 and the vfio-pci VF in DPDK mode.
func cnfDemo(binDir, sysRoot, dir string, host ns.NetNS) error {
	fmt.Printf("\n### the device plugin's pools on this node\n$ multinet-deviceplugin --check --config dp.json\n%s\n", dpConfig)
	cfg := filepath.Join(dir, "dp.json")
	os.WriteFile(cfg, []byte(dpConfig), 0o644)
	out, err := exec.Command(filepath.Join(binDir, "multinet-deviceplugin"), "--check", "--config", cfg, "--sysfs-root", sysRoot).Output()
	fmt.Print(string(out))
	if err != nil {
		return fmt.Errorf("device plugin --check: %w", err)
	}
	// The VFs' netdevs, as links on the node (veth links stand in for igbvf netdevs).
	err = host.Do(func(ns.NetNS) error {
		for _, n := range []string{"enp0s2", "enp0s2v0", "enp0s2v1"} {
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: n}, PeerName: n + "p"}); err != nil {
				return fmt.Errorf("link %s: %w", n, err)
			}
			peer, _ := netlink.LinkByName(n + "p")
			netlink.LinkSetUp(peer)
		}
		return nil
	})
	if err != nil {
		return err
	}
	ipam, netDir := filepath.Join(dir, "ipam"), filepath.Join(dir, "networks")
	os.WriteFile(filepath.Join(netDir, "sriov.yaml"), []byte(fmt.Sprintf(sriovNADs, ipam)), 0o644)
	checkpoint := filepath.Join(dir, "kubelet_internal_checkpoint")
	os.WriteFile(checkpoint, []byte(`{"Data":{"PodDeviceEntries":[
	  {"PodUID":"uid-upf","ContainerName":"upf","ResourceName":"intel.com/sriov_netdevice","DeviceIDs":{"-1":["0000:00:12.1"]}},
	  {"PodUID":"uid-upf","ContainerName":"upf","ResourceName":"intel.com/sriov_dpdk","DeviceIDs":{"-1":["0000:00:12.2"]}}]},"Checksum":0}`), 0o644)
	fmt.Printf("\n### two SR-IOV NADs (in %s)\n%s", netDir, fmt.Sprintf(sriovNADs, ipam))

	conf, _ := os.ReadFile(filepath.Join(dir, "net.d", "00-multinet.conflist"))
	var c map[string]interface{}
	json.Unmarshal(conf, &c)
	plugin := c["plugins"].([]interface{})[0].(map[string]interface{})
	plugin["kubeletCheckpoint"] = checkpoint
	plugin["podResourcesSocket"] = filepath.Join(dir, "no-kubelet.sock")
	conf, _ = json.Marshal(c)
	list, err := libcni.ConfListFromBytes(conf)
	if err != nil {
		return err
	}
	pod, err := testutils.NewNS()
	if err != nil {
		return err
	}
	defer func() { pod.Close(); testutils.UnmountNS(pod) }()
	os.Setenv("MULTINET_SYSFS_ROOT", sysRoot)
	os.Setenv("MULTINET_STATE_DIR", filepath.Join(dir, "state"))
	os.Setenv("MULTINET_DEVINFO_DIR", filepath.Join(dir, "devinfo"))
	cni := libcni.NewCNIConfigWithCacheDir([]string{binDir, "/usr/lib/cni"}, filepath.Join(dir, "runtime-cache"), nil)
	rt := &libcni.RuntimeConf{ContainerID: "demo-upf-1", NetNS: pod.Path(), IfName: "eth0", Args: [][2]string{
		{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "upf"}, {"K8S_POD_UID", "uid-upf"},
		{"MULTINET_NETWORKS", `[{"name":"sriov-n3","interface":"n3"},{"name":"sriov-dpdk","interface":"dpdk0"}]`}}}
	fmt.Println("\n### CNI ADD for pod default/upf (kubelet gave it VF 0000:00:12.1 of intel.com/sriov_netdevice and")
	fmt.Println("### VF 0000:00:12.2 of intel.com/sriov_dpdk), networks: [{sriov-n3 on n3}, {sriov-dpdk on dpdk0}]")
	err = host.Do(func(ns.NetNS) error {
		_, err := cni.AddNetworkList(context.Background(), list, rt)
		return err
	})
	if err != nil {
		return fmt.Errorf("ADD: %w", err)
	}
	pod.Do(func(ns.NetNS) error {
		out, _ := exec.Command("ip", "-br", "addr").CombinedOutput()
		fmt.Printf("\n### inside the pod: n3 is the VF netdev enp0s2v1; dpdk0 has no netdev (vfio-pci)\n$ ip -br addr\n%s", out)
		return nil
	})
	status, _ := os.ReadFile(filepath.Join(dir, "cache", "status", "demo-upf-1.json"))
	var st []map[string]interface{}
	json.Unmarshal(status, &st)
	fmt.Println("\n### network-status device-info (what a DPDK app or a CNF reads from /etc/podnetinfo)")
	for _, e := range st {
		di, _ := json.Marshal(e["device-info"])
		fmt.Printf("%-20s %-6s %s\n", e["name"], e["interface"], di)
	}
	err = host.Do(func(ns.NetNS) error { return cni.DelNetworkList(context.Background(), list, rt) })
	if err != nil {
		return fmt.Errorf("DEL: %w", err)
	}
	host.Do(func(ns.NetNS) error {
		_, err := netlink.LinkByName("enp0s2v1")
		fmt.Printf("\n### CNI DEL: VF netdev enp0s2v1 back on the node: %v\n", err == nil)
		return nil
	})
	return nil
}
