//go:build e2e_cluster

package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/multinet-io/multinet/e2e/cluster/clustertest"
	"github.com/multinet-io/multinet/podresources"
)

// vfMacvlanPod asks for a VF (through sriov-net and the device plugin's resource) and the
// macvlan network: net1 the macvlan, net2 the VF.
func vfMacvlanPod(p *corev1.Pod) {
	withNetworks("macvlan-conf,sriov-net")(p)
	p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{sriovRes: resource.MustParse("1")}
}

// liveSandboxes is every sandbox the runtime runs (ready: its network is set up).
func liveSandboxes(t *testing.T, c *clustertest.Cluster) map[string]string {
	t.Helper()
	resp, err := c.Runtime(t).ListPodSandbox(context.Background(), &criv1.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, s := range resp.Items {
		if s.State == criv1.PodSandboxState_SANDBOX_READY {
			out[s.Id] = s.Metadata.Namespace + "/" + s.Metadata.Name
		}
	}
	return out
}

// assertAttached checks a pod as a user does: Running, network-status with eth0 and its
// networks, each interface in the pod with the address network-status names, and for a VF pod
// net2 being the VF kubelet allocated to it (its MAC), no longer in the node's namespace.
func assertAttached(t *testing.T, c *clustertest.Cluster, name string, vf bool, macs map[string]string) {
	t.Helper()
	pod := c.WaitRunning(t, "default", name, 180*time.Second)
	st := networkStatus(t, c, "default", name)
	want := 2
	if vf {
		want = 3
	}
	if len(st) != want {
		t.Errorf("pod %s: network-status %+v, want %d interfaces", name, st, want)
		return
	}
	netns := clustertest.PodNetNS(t, "eth0", pod.Status.PodIP)
	for _, s := range st[1:] {
		netns.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName(s.Interface)
			if err != nil {
				t.Errorf("pod %s has no %s: %v", name, s.Interface, err)
				return nil
			}
			addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
			if len(addrs) != 1 || len(s.IPs) != 1 || addrs[0].IP.String() != s.IPs[0] {
				t.Errorf("pod %s %s: addresses %v, network-status says %v", name, s.Interface, addrs, s.IPs)
			}
			return nil
		})
	}
	if !vf {
		return
	}
	ids, err := podresources.DeviceIDs(context.Background(), podresources.Config{Socket: c.PodResourcesSocket()}, "default", name, string(pod.UID), sriovRes)
	if err != nil || len(ids) != 1 {
		t.Errorf("pod %s: kubelet allocated %v, %v", name, ids, err)
		return
	}
	vfNetdev := "mne2ev" + ids[0][len(ids[0])-1:]
	netns.Do(func(ns.NetNS) error {
		if l, err := netlink.LinkByName("net2"); err != nil || l.Attrs().HardwareAddr.String() != macs[vfNetdev] {
			t.Errorf("pod %s: net2 is not its VF %s (%s): %v", name, ids[0], vfNetdev, err)
		}
		return nil
	})
}

// nothingStale fails on every lease, delegate cache and sriov record of a container that is no
// live sandbox, and on every VF netdev that is neither in the node under its name with its MAC
// nor held by a live pod (held lists the VF netdevs live pods hold).
func nothingStale(t *testing.T, c *clustertest.Cluster, macs map[string]string, held map[string]bool) {
	t.Helper()
	live := liveSandboxes(t, c)
	for lease, owner := range leaseOwners(c) {
		if _, ok := live[owner]; !ok {
			t.Errorf("lease %s held by %q, no live sandbox", lease, owner)
		}
	}
	caches, _ := filepath.Glob(filepath.Join(c.MultinetCacheDir(), "delegates", "*.json"))
	for _, f := range caches {
		if _, ok := live[strings.TrimSuffix(filepath.Base(f), ".json")]; !ok {
			t.Errorf("delegate cache %s of no live sandbox", f)
		}
	}
	records, _ := filepath.Glob(filepath.Join(c.Dir, "cni-state", "sriov", "cache", "*.json"))
	for _, f := range records {
		b, _ := os.ReadFile(f)
		found := false
		for id := range live {
			found = found || strings.Contains(string(b), id)
		}
		if !found {
			t.Errorf("sriov record %s of no live sandbox", f)
		}
	}
	var names []string
	for n := range macs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if held[n] {
			continue
		}
		if l, err := netlink.LinkByName(n); err != nil || l.Attrs().HardwareAddr.String() != macs[n] {
			t.Errorf("VF netdev %s not back on the node with its MAC %s: %v", n, macs[n], err)
		}
	}
}

// kubelet restarted (SIGTERM, then the same command line, as a node upgrade or a crash does)
// while pods are being created and deleted: pods with a VF and a macvlan, pods with the
// macvlan only. Every pod that is not deleted ends Running with all its interfaces (the VF
// kubelet allocated to it), every deleted pod leaves nothing: no lease, no delegate cache, no
// sriov record of a sandbox that no longer runs, every free VF back on the node as it was. Runs
// in both modes (thin, and thick through the agent).
func TestKubeletRestartWhilePodsCreatedAndDeleted(t *testing.T) {
	c := clustertest.Connect(t)
	tree, macs := simSRIOVNode(t, c, 4)
	p := startDevicePlugin(t, c, tree.Root, `{"resourceList":[{"resourceName":"mn_sriov_net","selectors":{"pfNames":["mne2epf"]}}]}`)
	waitNodeRes(t, c, p, "registered", sriovRes, 4, 4)
	c.CreateNAD(t, "default", "sriov-net", `{"cniVersion": "1.0.0", "type": "sriov", "ipam": {"type": "host-local",
	  "dataDir": "`+c.IPAMDir()+`", "subnet": "10.56.217.0/24"}}`, map[string]string{"k8s.v1.cni.cncf.io/resourceName": sriovRes})
	master := macvlanMaster(t)
	c.CreateNAD(t, "default", "macvlan-conf", macvlanConf(c, master, "192.168.1.0/24"), nil)

	type spec struct {
		name     string
		vf, kept bool
	}
	before := []spec{{"kr-vf-0", true, false}, {"kr-vf-1", true, true}, {"kr-mv-0", false, false}, {"kr-mv-1", false, true}}
	during := []spec{{"kr-vf-2", true, true}, {"kr-vf-3", true, false}, {"kr-mv-2", false, true}}
	create := func(s spec) {
		if s.vf {
			c.CreatePod(t, "default", s.name, vfMacvlanPod)
		} else {
			c.CreatePod(t, "default", s.name, withNetworks("macvlan-conf"))
		}
	}
	caches := func() int {
		m, _ := filepath.Glob(filepath.Join(c.MultinetCacheDir(), "delegates", "*.json"))
		return len(m)
	}
	cached0 := caches()
	for _, s := range before {
		create(s)
	}
	// kubelet goes as soon as the first of their sandboxes' ADDs has started (its delegate
	// cache is written first), with the others on their way.
	for deadline := time.Now().Add(30 * time.Second); caches() == cached0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	running := 0
	for _, s := range before {
		if p, err := c.Kube.CoreV1().Pods("default").Get(context.Background(), s.name, metav1.GetOptions{}); err == nil && p.Status.Phase == corev1.PodRunning {
			running++
		}
	}
	t.Logf("restarting kubelet with %d sandbox ADDs started, %d of %d pods Running", caches()-cached0, running, len(before))
	var wg sync.WaitGroup
	restarted := make(chan struct{})
	go func() { restartKubelet(t, c); close(restarted) }()
	// While kubelet is down and starting again: new pods, and deletes of pods created before
	// (those created earlier and those attaching now).
	time.Sleep(300 * time.Millisecond)
	for _, s := range during {
		create(s)
	}
	for _, s := range before {
		if !s.kept {
			wg.Add(1)
			go func() { defer wg.Done(); c.DeletePod(t, "default", s.name) }()
		}
	}
	<-restarted
	// A delete of a pod created while kubelet was away, before it may have started.
	for _, s := range during {
		if !s.kept {
			wg.Add(1)
			go func() { defer wg.Done(); c.DeletePod(t, "default", s.name) }()
		}
	}
	wg.Wait()

	held := map[string]bool{}
	for _, s := range append(before, during...) {
		if !s.kept {
			if _, err := c.Kube.CoreV1().Pods("default").Get(context.Background(), s.name, metav1.GetOptions{}); err == nil {
				t.Errorf("deleted pod %s still there", s.name)
			}
			continue
		}
		if refusedAtAdmission(t, c, s.name) {
			// kubelet's own behaviour after a restart: a pod asking for a device before the
			// device plugin registered again fails admission (UnexpectedAdmissionError). It
			// never reached CNI: no sandbox, nothing to clean.
			if ids := c.Sandboxes(t, "default", s.name); len(ids) != 0 {
				t.Errorf("pod %s refused at admission has sandboxes %v", s.name, ids)
			}
			c.DeletePod(t, "default", s.name)
			continue
		}
		assertAttached(t, c, s.name, s.vf, macs)
		if s.vf {
			pod, _ := c.Kube.CoreV1().Pods("default").Get(context.Background(), s.name, metav1.GetOptions{})
			ids, _ := podresources.DeviceIDs(context.Background(), podresources.Config{Socket: c.PodResourcesSocket()}, "default", s.name, string(pod.UID), sriovRes)
			for _, id := range ids {
				held["mne2ev"+id[len(id)-1:]] = true
			}
		}
	}
	nothingStale(t, c, macs, held)
	if t.Failed() {
		t.Logf("kubelet log tail:\n%s", tail(filepath.Join(c.Dir, "logs", "kubelet.log"), 40))
		return
	}
	for _, s := range append(before, during...) {
		if s.kept {
			c.DeletePod(t, "default", s.name)
		}
	}
	nothingStale(t, c, macs, nil)
}

// refusedAtAdmission waits for the pod to leave Pending and says whether kubelet failed it at
// admission (phase Failed, reason UnexpectedAdmissionError) rather than starting it.
func refusedAtAdmission(t *testing.T, c *clustertest.Cluster, name string) bool {
	t.Helper()
	deadline := time.Now().Add(180 * time.Second)
	for time.Now().Before(deadline) {
		p, err := c.Kube.CoreV1().Pods("default").Get(context.Background(), name, metav1.GetOptions{})
		if err == nil && p.Status.Phase == corev1.PodFailed && p.Status.Reason == "UnexpectedAdmissionError" {
			t.Logf("pod %s: kubelet refused it at admission after its restart: %s", name, p.Status.Message)
			return true
		}
		if err == nil && p.Status.Phase != corev1.PodPending {
			return false
		}
		time.Sleep(300 * time.Millisecond)
	}
	return false
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + fmt.Sprintf("\n(%s)", path)
}
