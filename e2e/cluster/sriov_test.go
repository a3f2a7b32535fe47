//go:build e2e_cluster

package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/e2e/cluster/clustertest"
	"github.com/multinet-io/multinet/pci/pcitest"
	"github.com/multinet-io/multinet/podresources"
)

const (
	e2ePF    = "0000:d9:00.0"
	sriovRes = "intel.com/mn_sriov_net"
)

func e2eVF(i int) string { return fmt.Sprintf("0000:d9:02.%d", i) }

// simSRIOVNode makes the node a simulated SR-IOV node the way a NIC would: a PF and nVFs VF
// netdevs (veth links in the node's namespace) named in a fake sysfs tree that the CNI plugins
// run by containerd read (cluster-up points MULTINET_SYSFS_ROOT at $CLUSTER_DIR/sim-sysfs).
// It returns the tree and each VF netdev's MAC.
func simSRIOVNode(t *testing.T, c *clustertest.Cluster, nVFs int) (*pcitest.Tree, map[string]string) {
	t.Helper()
	macs := map[string]string{}
	var links []netlink.Link
	for i := -1; i < nVFs; i++ {
		name := fmt.Sprintf("mne2ev%d", i)
		if i < 0 {
			name = "mne2epf"
		}
		if l, err := netlink.LinkByName(name); err == nil {
			netlink.LinkDel(l) // a leftover of an interrupted run
		}
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
			t.Fatalf("add veth %s: %v", name, err)
		}
		l, _ := netlink.LinkByName(name)
		netlink.LinkSetUp(l)
		links = append(links, l)
		macs[name] = l.Attrs().HardwareAddr.String()
	}
	t.Cleanup(func() {
		for _, l := range links {
			netlink.LinkDel(l)
		}
	})
	tree := pcitest.New(t)
	tree.AddPF(pcitest.PF{Address: e2ePF, Vendor: "8086", Device: "1593", Driver: "ice", Netdev: "mne2epf", TotalVFs: 8, NUMANode: 0})
	for i := 0; i < nVFs; i++ {
		tree.AddVF(pcitest.VF{PF: e2ePF, Index: i, Address: e2eVF(i), Vendor: "8086", Device: "1889", Driver: "iavf", Netdev: fmt.Sprintf("mne2ev%d", i)})
	}
	tree.SetOperState(e2ePF, "mne2epf", "up")
	link := filepath.Join(c.Dir, "sim-sysfs")
	os.Remove(link)
	if err := os.Symlink(tree.Root, link); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(link) })
	return tree, macs
}

// startDevicePlugin runs the real multinet-deviceplugin binary against the kubelet.
func startDevicePlugin(t *testing.T, c *clustertest.Cluster, sysfs, config string) *plugin {
	t.Helper()
	work := t.TempDir()
	bin := buildTool(t, "./cmd/multinet-deviceplugin", work)
	cfg := filepath.Join(work, "config.json")
	writeConfig(t, cfg, config)
	return startProcess(t, work, []string{devinfo.EnvBase + "=" + filepath.Join(c.Dir, "devinfo")}, bin, "--config", cfg,
		"--sysfs-root", sysfs, "--device-plugin-dir", c.DevicePluginDir(),
		"--pools-file", filepath.Join(c.Dir, "pools.json")) // what containerd's sriov reads (cluster-up)
}

func sriovPod(name string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		withNetworks("sriov-net")(p)
		p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{sriovRes: resource.MustParse("1")}
	}
}

// The whole chain on a real node: kubelet allocates a VF from our device plugin, containerd
// calls multinet, multinet asks kubelet's PodResources which VF the pod got and hands it to the
// sriov CNI; the pod gets net1 on that VF and network-status carries its device-info. Two pods
// get different VFs; a third, with no VF left, is refused by kubelet before any network is set up.
func TestSriovPodEndToEnd(t *testing.T) {
	c := clustertest.Connect(t)
	tree, macs := simSRIOVNode(t, c, 2)
	p := startDevicePlugin(t, c, tree.Root, `{"resourceList":[{"resourceName":"mn_sriov_net","selectors":{"pfNames":["mne2epf"]}}]}`)
	waitNodeRes(t, c, p, "registered", sriovRes, 2, 2)
	c.CreateNAD(t, "default", "sriov-net", `{"cniVersion": "1.0.0", "type": "sriov", "ipam": {"type": "host-local",
	  "dataDir": "`+c.IPAMDir()+`", "subnet": "10.56.217.0/24"}}`, map[string]string{"k8s.v1.cni.cncf.io/resourceName": sriovRes})

	got := map[string]string{} // pod -> VF
	for _, name := range []string{"cnf-a", "cnf-b"} {
		c.CreatePod(t, "default", name, sriovPod(name))
		pod := c.WaitRunning(t, "default", name, 90*time.Second)
		ids, err := podresources.DeviceIDs(context.Background(), podresources.Config{Socket: c.PodResourcesSocket()}, "default", name, string(pod.UID), sriovRes)
		if err != nil || len(ids) != 1 {
			t.Fatalf("%s: kubelet allocated %v, %v", name, ids, err)
		}
		st := networkStatus(t, c, "default", name)
		if len(st) != 2 || st[1].Name != "default/sriov-net" || st[1].Interface != "net1" || st[1].DeviceInfo == nil ||
			st[1].DeviceInfo.Pci == nil || st[1].DeviceInfo.Pci.PciAddress != ids[0] || st[1].DeviceInfo.Pci.PfPciAddress != e2ePF {
			t.Fatalf("%s: network-status %+v; kubelet allocated %s", name, st, ids[0])
		}
		vfNetdev := "mne2ev" + ids[0][len(ids[0])-1:]
		netns := clustertest.PodNetNS(t, "eth0", pod.Status.PodIP)
		netns.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName("net1")
			if err != nil || l.Attrs().HardwareAddr.String() != macs[vfNetdev] {
				t.Errorf("%s: net1 is not the allocated VF %s (%s): %v", name, ids[0], vfNetdev, err)
				return nil
			}
			addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
			if len(addrs) != 1 || addrs[0].IP.String() != st[1].IPs[0] {
				t.Errorf("%s: net1 addresses %v, network-status says %v", name, addrs, st[1].IPs)
			}
			return nil
		})
		if _, err := netlink.LinkByName(vfNetdev); err == nil {
			t.Errorf("%s: VF netdev %s still in the node's namespace", name, vfNetdev)
		}
		got[name] = ids[0]
	}
	if got["cnf-a"] == got["cnf-b"] {
		t.Fatalf("both pods got VF %s", got["cnf-a"])
	}

	// No VF left: kubelet refuses the third pod at admission; it never reaches CNI.
	c.CreatePod(t, "default", "cnf-c", sriovPod("cnf-c"))
	deadline := time.Now().Add(60 * time.Second)
	for {
		pod, err := c.Kube.CoreV1().Pods("default").Get(context.Background(), "cnf-c", metav1.GetOptions{})
		if err == nil && pod.Status.Phase == corev1.PodRunning {
			t.Fatal("third pod is Running with no VF left")
		}
		if err == nil && pod.Status.Reason != "" {
			if !strings.Contains(pod.Status.Reason+pod.Status.Message, "mn_sriov_net") {
				t.Errorf("third pod refused for %q: %s", pod.Status.Reason, pod.Status.Message)
			}
			t.Logf("third pod: phase %s, kubelet's reason %s: %s", pod.Status.Phase, pod.Status.Reason, pod.Status.Message)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("third pod neither refused nor running: %+v\n%s", pod.Status, c.Events("default", "cnf-c"))
		}
		time.Sleep(300 * time.Millisecond)
	}
	if ids := c.Sandboxes(t, "default", "cnf-c"); len(ids) != 0 {
		t.Errorf("third pod got sandboxes %v: half-attached", ids)
	}

	// Deleting a pod gives its VF back to the node under its own name.
	c.DeletePod(t, "default", "cnf-a")
	vfNetdev := "mne2ev" + got["cnf-a"][len(got["cnf-a"])-1:]
	if l, err := netlink.LinkByName(vfNetdev); err != nil || l.Attrs().HardwareAddr.String() != macs[vfNetdev] {
		t.Errorf("VF %s not back on the node as %s after the pod was deleted: %v", got["cnf-a"], vfNetdev, err)
	}
}
