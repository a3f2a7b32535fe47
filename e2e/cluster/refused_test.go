//go:build e2e_cluster

package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/e2e/cluster/clustertest"
	"github.com/multinet-io/multinet/pci/pcitest"
)

// A config.json with one pool the node cannot serve (upstream's documented ddpProfiles pool):
// the other pool registers and its VFs show on the node, and the refused one is a Warning
// Event on the Node naming the resource and the reason, posted with the device plugin's own
// service account (deploy/rbac/multinet-deviceplugin.yaml), as `kubectl describe node` shows.
func TestDevicePluginRefusedPoolIsANodeEvent(t *testing.T) {
	c := clustertest.Connect(t)
	work := t.TempDir()
	bin := buildTool(t, "./cmd/multinet-deviceplugin", work)

	tree := pcitest.New(t)
	tree.AddPF(pcitest.PF{Address: simPF, Vendor: "8086", Device: "1593", Driver: "ice", Netdev: "mnsim0", TotalVFs: 8})
	for i := 0; i < 2; i++ {
		tree.AddVF(pcitest.VF{PF: simPF, Index: i, Address: simVF(i), Vendor: "8086", Device: "1889", Driver: "iavf", Netdev: fmt.Sprintf("mnsim0v%d", i)})
	}
	cfgPath := filepath.Join(work, "config.json")
	writeConfig(t, cfgPath, `{"resourceList":[
	  {"resourceName":"mn_e2e_vf","selectors":{"vendors":["8086"],"drivers":["iavf"],"pfNames":["mnsim0"]}},
	  {"resourceName":"mn_e2e_gtp","selectors":{"vendors":["8086"],"ddpProfiles":["GTPv1-C/U IPv4/IPv6 payload"]}}]}`)

	token, err := exec.Command(filepath.Join(c.Dir, "tools", "clusterctl"), "token", filepath.Join(c.Dir, "kubeconfig"), "kube-system/multinet-deviceplugin", "1h").Output()
	if err != nil {
		t.Fatalf("service-account token: %v", err)
	}
	kc := filepath.Join(work, "dp.kubeconfig")
	kcText := fmt.Sprintf("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: %q, certificate-authority: %q}\nusers:\n- name: u\n  user: {token: %q}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\n",
		c.Config.Host, c.Config.TLSClientConfig.CAFile, strings.TrimSpace(string(token)))
	if err := os.WriteFile(kc, []byte(kcText), 0o600); err != nil {
		t.Fatal(err)
	}

	since := time.Now().Add(-time.Second)
	p := startProcess(t, work, []string{devinfo.EnvBase + "=" + filepath.Join(work, "devinfo")}, bin, "--config", cfgPath,
		"--sysfs-root", tree.Root, "--device-plugin-dir", c.DevicePluginDir(),
		"--kubeconfig", kc, "--node-name", clustertest.Node, "--pools-file", filepath.Join(work, "pools.json"))

	waitNodeRes(t, c, p, "the servable pool registered", vfRes, 2, 2)
	if cp, _ := nodeRes(t, c, "intel.com/mn_e2e_gtp"); cp != -1 {
		t.Errorf("the refused pool shows on the node with capacity %d", cp)
	}
	waitPoolRefused(t, c, p, since, "multinet-deviceplugin", "intel.com/mn_e2e_gtp", "ddpProfiles")
	if !strings.Contains(p.logText(), "pool refused") {
		t.Errorf("the refusal is not in the log")
	}
}

// waitPoolRefused waits (30 s) for the Warning PoolRefused Event on the Node that component
// posted since then about resource, its message naming why; p's log is shown when none comes.
func waitPoolRefused(t *testing.T, c *clustertest.Cluster, p *plugin, since time.Time, component, resource, why string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		evs, err := c.Kube.CoreV1().Events("").List(context.Background(), metav1.ListOptions{
			FieldSelector: "involvedObject.kind=Node,involvedObject.name=" + clustertest.Node + ",reason=PoolRefused"})
		if err != nil {
			t.Fatal(err)
		}
		var found *corev1.Event
		for i := range evs.Items {
			e := &evs.Items[i]
			if e.LastTimestamp.Time.After(since) && e.Source.Component == component && strings.Contains(e.Message, resource) {
				found = e
			}
		}
		if found != nil {
			if found.Type != corev1.EventTypeWarning || !strings.Contains(found.Message, why) {
				t.Errorf("event %s %s from %s: %s", found.Type, found.Reason, found.Source.Component, found.Message)
			}
			t.Logf("node event: %s %s: %s", found.Type, found.Reason, found.Message)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no PoolRefused event from %s on node %s naming %s; log:\n%s", component, clustertest.Node, resource, p.logText())
		}
		time.Sleep(300 * time.Millisecond)
	}
}
