//go:build e2e_cluster

package cluster

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/multinet-io/multinet/e2e/cluster/clustertest"
)

// The meta-plugin's default policy on a real node (issue 12 items 3 and 10): a tenant's NAD may
// not hang a macvlan off the link of the node's default route (here the machine's own uplink,
// reached by leaving master empty), and a tenant pod's portMappings do not reach its NAD's
// portmap. Both sandboxes fail with an event naming pod, NAD, plugin and field; no DNAT rule
// and no macvlan appear on the node.
func TestSecurityPolicyOnRealNode(t *testing.T) {
	c := clustertest.Connect(t)
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	uplink := ""
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() {
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
				uplink = l.Attrs().Name
				break
			}
		}
	}
	master := macvlanMaster(t)
	c.CreateNamespace(t, "tenant-p")

	if uplink != "" {
		c.CreateNAD(t, "tenant-p", "on-uplink", fmt.Sprintf(`{"cniVersion": "1.0.0", "type": "macvlan", "mode": "bridge",
		  "ipam": {"type": "host-local", "dataDir": %q, "subnet": "192.168.61.0/24"}}`, c.IPAMDir()), nil)
		c.CreatePod(t, "tenant-p", "uplink", withNetworks("on-uplink"))
		msg := c.WaitEvent(t, "tenant-p", "uplink", 60*time.Second, "pod tenant-p/uplink", "network tenant-p/on-uplink",
			"plugin 1 (macvlan): master "+uplink+" refused", "default route")
		t.Logf("event: %s", msg)
	} else {
		t.Log("the machine has no IPv4 default route: the uplink case is skipped")
	}

	c.CreateNAD(t, "tenant-p", "pm", fmt.Sprintf(`{"cniVersion": "1.0.0", "plugins": [%s,
	  {"type": "portmap", "capabilities": {"portMappings": true}}]}`, macvlanConf(c, master, "192.168.62.0/24")), nil)
	c.CreatePod(t, "tenant-p", "dnat", withNetworks(`[{"name": "pm", "portMappings": [{"hostPort": 19022, "containerPort": 22, "protocol": "tcp"}]}]`))
	msg := c.WaitEvent(t, "tenant-p", "dnat", 60*time.Second, "pod tenant-p/dnat", "network tenant-p/pm", "plugin 2 (portmap)",
		"portMappings from the pod's annotation refused")
	t.Logf("event: %s", msg)

	out, err := exec.Command("iptables-save", "-t", "nat").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables-save: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "--dport 19022 ") {
		t.Errorf("host DNAT for the refused pod's port 19022:\n%s", out)
	}
	links, _ := netlink.LinkList()
	for _, l := range links {
		if l.Type() == "macvlan" && uplink != "" && l.Attrs().ParentIndex > 0 {
			if p, err := netlink.LinkByIndex(l.Attrs().ParentIndex); err == nil && p.Attrs().Name == uplink {
				t.Errorf("macvlan %s on the node's uplink %s", l.Attrs().Name, uplink)
			}
		}
	}
	for _, name := range []string{"uplink", "dnat"} {
		if p, err := c.Kube.CoreV1().Pods("tenant-p").Get(context.Background(), name, metav1.GetOptions{}); err == nil && p.Status.Phase == corev1.PodRunning {
			t.Errorf("pod tenant-p/%s runs", name)
		}
	}
}
