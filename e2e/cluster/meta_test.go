//go:build e2e_cluster

package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	"github.com/vishvananda/netlink"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/multinet-io/multinet/e2e/cluster/clustertest"
)

// macvlanMaster gives the macvlan NADs a parent link of their own on the node, so the tests
// never hang pods off the machine's real uplink.
func macvlanMaster(t *testing.T) string {
	t.Helper()
	const name = "mnmv0"
	if _, err := netlink.LinkByName(name); err != nil {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
			t.Fatalf("add veth %s: %v", name, err)
		}
		l, _ := netlink.LinkByName(name)
		netlink.LinkSetUp(l)
		t.Cleanup(func() { netlink.LinkDel(l) })
	}
	return name
}

// macvlanConf is the seed's macvlan-conf, with host-local leases kept under the cluster dir.
func macvlanConf(c *clustertest.Cluster, master, subnet string) string {
	return fmt.Sprintf(`{"cniVersion": "0.3.0", "type": "macvlan", "master": %q, "mode": "bridge",
	  "ipam": {"type": "host-local", "dataDir": %q, "subnet": %q, "routes": [{"dst": "0.0.0.0/0"}]}}`,
		master, c.IPAMDir(), subnet)
}

func withNetworks(v string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[nadv1.NetworkAttachmentAnnot] = v
	}
}

// networkStatus reads the annotation the way `kubectl get pod -o jsonpath=...` shows it.
func networkStatus(t *testing.T, c *clustertest.Cluster, namespace, name string) []nadv1.NetworkStatus {
	t.Helper()
	p, err := c.Kube.CoreV1().Pods(namespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	raw := p.Annotations[nadv1.NetworkStatusAnnot]
	var st []nadv1.NetworkStatus
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		t.Fatalf("pod %s/%s network-status %q: %v", namespace, name, raw, err)
	}
	return st
}

func leaseOwners(c *clustertest.Cluster) map[string]string {
	out := map[string]string{}
	filepath.Walk(c.IPAMDir(), func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && !strings.HasPrefix(info.Name(), "last_reserved") && info.Name() != "lock" {
			b, _ := os.ReadFile(path)
			out[strings.TrimPrefix(path, c.IPAMDir()+"/")] = strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
		}
		return nil
	})
	return out
}

func cacheMentions(c *clustertest.Cluster, ids []string) []string {
	var out []string
	for _, id := range ids {
		if _, err := os.Stat(filepath.Join(c.MultinetCacheDir(), "delegates", id+".json")); err == nil {
			out = append(out, id)
		}
	}
	return out
}

// The seed's walk-through on a real node: macvlan-conf attached twice through the annotation,
// network-status as kubectl shows it, the interfaces in the pod, everything released on delete.
func TestMetaMacvlanConfTwice(t *testing.T) {
	c := clustertest.Connect(t)
	master := macvlanMaster(t)
	c.CreateNAD(t, "default", "macvlan-conf", macvlanConf(c, master, "192.168.1.0/24"), nil)
	c.CreatePod(t, "default", "samplepod", withNetworks("macvlan-conf,macvlan-conf"))
	pod := c.WaitRunning(t, "default", "samplepod", 90*time.Second)

	st := networkStatus(t, c, "default", "samplepod")
	if len(st) != 3 {
		t.Fatalf("network-status has %d entries, want 3: %+v", len(st), st)
	}
	if st[0].Name != "cbr0" || !st[0].Default || st[0].Interface != "eth0" || st[0].IPs[0] != pod.Status.PodIP {
		t.Errorf("cluster network entry %+v (pod IP %s)", st[0], pod.Status.PodIP)
	}
	netns := clustertest.PodNetNS(t, "eth0", pod.Status.PodIP)
	for i, ifname := range []string{"net1", "net2"} {
		e := st[i+1]
		if e.Name != "default/macvlan-conf" || e.Interface != ifname || e.Default || len(e.IPs) != 1 {
			t.Errorf("entry %d = %+v", i+1, e)
			continue
		}
		netns.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName(ifname)
			if err != nil {
				t.Errorf("pod has no %s: %v", ifname, err)
				return nil
			}
			addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
			if len(addrs) != 1 || addrs[0].IP.String() != e.IPs[0] || l.Attrs().HardwareAddr.String() != e.Mac {
				t.Errorf("%s in pod: %v %s; network-status says %v %s", ifname, addrs, l.Attrs().HardwareAddr, e.IPs, e.Mac)
			}
			return nil
		})
	}
	ids := c.Sandboxes(t, "default", "samplepod")
	c.DeletePod(t, "default", "samplepod")
	for lease, owner := range leaseOwners(c) {
		for _, id := range ids {
			if owner == id {
				t.Errorf("lease %s still held by the deleted pod's sandbox %s", lease, id)
			}
		}
	}
	if left := cacheMentions(c, ids); len(left) > 0 {
		t.Errorf("multinet cache still lists deleted sandboxes %v", left)
	}
}

// The API server is gone when the pod's sandbox is torn down (as after a control-plane outage
// or on a node cut off from it): DEL works from the cache and gives the IPs back.
func TestMetaDelWithAPIServerDown(t *testing.T) {
	c := clustertest.Connect(t)
	master := macvlanMaster(t)
	c.CreateNAD(t, "default", "macvlan-conf", macvlanConf(c, master, "192.168.1.0/24"), nil)
	c.CreatePod(t, "default", "api-down", withNetworks("macvlan-conf"))
	c.WaitRunning(t, "default", "api-down", 90*time.Second)
	ids := c.Sandboxes(t, "default", "api-down")
	if len(ids) != 1 {
		t.Fatalf("sandboxes = %v", ids)
	}
	held := 0
	for _, owner := range leaseOwners(c) {
		if owner == ids[0] {
			held++
		}
	}
	if held != 2 {
		t.Fatalf("pod holds %d leases, want 2 (eth0 and net1): %v", held, leaseOwners(c))
	}

	restart := c.StopAPIServer(t)
	if _, err := c.Runtime(t).StopPodSandbox(context.Background(), &criv1.StopPodSandboxRequest{PodSandboxId: ids[0]}); err != nil {
		t.Fatalf("stop sandbox with the API server down (CNI DEL failed?): %v", err)
	}
	for lease, owner := range leaseOwners(c) {
		if owner == ids[0] {
			t.Errorf("lease %s still held after DEL without the API server", lease)
		}
	}
	if left := cacheMentions(c, ids); len(left) > 0 {
		t.Errorf("multinet cache still lists %v", left)
	}
	restart()
}

// A pod naming a NAD that does not exist, and one whose second network fails in its plugin:
// the sandbox fails with an event naming the network, and nothing stays on the node.
func TestMetaFailuresLeaveNothing(t *testing.T) {
	c := clustertest.Connect(t)
	master := macvlanMaster(t)
	c.CreateNAD(t, "default", "macvlan-conf", macvlanConf(c, master, "192.168.1.0/24"), nil)
	c.CreateNAD(t, "default", "broken-net", macvlanConf(c, "no-such-link", "192.168.3.0/24"), nil)

	c.CreatePod(t, "default", "no-nad", withNetworks("macvlan-conf,ghost-net"))
	c.WaitEvent(t, "default", "no-nad", 60*time.Second, "default/ghost-net", "not found")

	c.CreatePod(t, "default", "half", withNetworks("macvlan-conf,broken-net"))
	msg := c.WaitEvent(t, "default", "half", 60*time.Second, "network default/broken-net on net2")
	t.Logf("event: %s", msg)

	c.CreatePod(t, "default", "bad-annotation", withNetworks("Macvlan_Conf"))
	c.WaitEvent(t, "default", "bad-annotation", 60*time.Second, "k8s.v1.cni.cncf.io/networks", "Macvlan_Conf")

	time.Sleep(2 * time.Second) // let an ADD in flight finish its undo
	for _, name := range []string{"no-nad", "half", "bad-annotation"} {
		ids := c.Sandboxes(t, "default", name)
		for lease, owner := range leaseOwners(c) {
			for _, id := range ids {
				if owner == id {
					t.Errorf("pod %s: lease %s held by failed sandbox %s", name, lease, id)
				}
			}
		}
		if left := cacheMentions(c, ids); len(left) > 0 {
			t.Errorf("pod %s: multinet cache lists failed sandboxes %v", name, left)
		}
	}
}

// The node's config has namespaceIsolation with "default" as the global namespace: a pod may
// use its own namespace's NADs and default's, never another tenant's.
func TestMetaNamespaceIsolation(t *testing.T) {
	c := clustertest.Connect(t)
	master := macvlanMaster(t)
	c.CreateNamespace(t, "tenant-a")
	c.CreateNamespace(t, "tenant-b")
	c.CreateNAD(t, "tenant-b", "blue-net", macvlanConf(c, master, "192.168.4.0/24"), nil)
	c.CreateNAD(t, "default", "macvlan-conf", macvlanConf(c, master, "192.168.1.0/24"), nil)

	c.CreatePod(t, "tenant-a", "snoop", withNetworks("tenant-b/blue-net"))
	c.WaitEvent(t, "tenant-a", "snoop", 60*time.Second, "tenant-b/blue-net refused", "namespaceIsolation")

	c.CreatePod(t, "tenant-a", "shared", withNetworks("default/macvlan-conf"))
	c.WaitRunning(t, "tenant-a", "shared", 90*time.Second)
	if st := networkStatus(t, c, "tenant-a", "shared"); len(st) != 2 || st[1].Name != "default/macvlan-conf" {
		t.Errorf("network-status = %+v", st)
	}
}

// The plugin's kubeconfig is the multinet service account bound to deploy/rbac's ClusterRole:
// every test above ran with it; here its rights are checked to be exactly what it needs.
func TestMetaRBACIsMinimal(t *testing.T) {
	c := clustertest.Connect(t)
	cfg, err := clientcmd.BuildConfigFromFlags("", c.MultinetKubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	sa, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	can := func(verb, group, resource, sub string) bool {
		r, err := sa.AuthorizationV1().SelfSubjectAccessReviews().Create(context.Background(), &authzv1.SelfSubjectAccessReview{
			Spec: authzv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authzv1.ResourceAttributes{
				Namespace: "default", Verb: verb, Group: group, Resource: resource, Subresource: sub}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("access review %s %s/%s: %v", verb, resource, sub, err)
		}
		return r.Status.Allowed
	}
	for _, need := range [][4]string{{"get", "", "pods", ""}, {"update", "", "pods", "status"}, {"get", "k8s.cni.cncf.io", "network-attachment-definitions", ""}} {
		if !can(need[0], need[1], need[2], need[3]) {
			t.Errorf("multinet service account cannot %v: the plugin needs it", need)
		}
	}
	for _, deny := range [][4]string{{"list", "", "pods", ""}, {"update", "", "pods", ""}, {"delete", "", "pods", ""}, {"get", "", "secrets", ""},
		{"create", "k8s.cni.cncf.io", "network-attachment-definitions", ""}, {"list", "k8s.cni.cncf.io", "network-attachment-definitions", ""}, {"patch", "", "nodes", ""}} {
		if can(deny[0], deny[1], deny[2], deny[3]) {
			t.Errorf("multinet service account may %v: more than it needs", deny)
		}
	}
}
