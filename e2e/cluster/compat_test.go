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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/multinet-io/multinet/e2e/cluster/clustertest"
)

// The node features Multus's own e2e suite relies on, as its tests drive them: files dropped on
// the node, pods created through the API.

// podSysctl reads an IPv4 sysctl of eth0 inside the pod's network namespace.
func podSysctl(t *testing.T, podIP, name string) string {
	t.Helper()
	var v []byte
	err := clustertest.PodNetNS(t, "eth0", podIP).Do(func(ns.NetNS) error {
		var err error
		v, err = os.ReadFile("/proc/sys/net/ipv4/conf/eth0/" + name)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(v))
}

// dropConf writes a plugin conf into a subdirectory of the node's conf dir, removed at the end.
func dropConf(t *testing.T, c *clustertest.Cluster, subdir, file, conf string) {
	t.Helper()
	dir := filepath.Join(c.CNIConfDir(), subdir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, file), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
}

// sysctlFromDroppedConf drops a tuning conf setting eth0's sysctl to 1 into subdir of the
// node's conf dir, runs a pod, checks that the pod's eth0 got it, runs want, and checks that
// deleting the pod releases its lease.
func sysctlFromDroppedConf(t *testing.T, subdir, pod, sysctl string, want func(c *clustertest.Cluster)) {
	c := clustertest.Connect(t)
	dropConf(t, c, subdir, "50-"+sysctl+".conf", fmt.Sprintf(
		`{"cniVersion": "1.0.0", "name": %q, "type": "tuning", "sysctl": {"net.ipv4.conf.eth0.%s": "1"}}`, sysctl, sysctl))
	c.CreatePod(t, "default", pod)
	p := c.WaitRunning(t, "default", pod, 90*time.Second)
	if v := podSysctl(t, p.Status.PodIP, sysctl); v != "1" {
		t.Errorf("pod eth0 %s = %s, want 1 from the tuning plugin in %s/", sysctl, v, subdir)
	}
	want(c)
	c.DeletePod(t, "default", pod)
	if l := leaseOwners(c); len(l) != 0 {
		t.Errorf("leases after delete: %v", l)
	}
}

// Multus e2e test-subdirectory-chaining: a tuning conf in <confDir>/<cluster network name>/ runs
// in every pod's cluster-network chain (libcni's subdirectory loading).
func TestMultusSubdirectoryChaining(t *testing.T) {
	sysctlFromDroppedConf(t, "cbr0", "subdir-chain", "arp_filter", func(*clustertest.Cluster) {})
}

// Multus e2e test-subdirectory-chaining-passthru: auxiliaryCNIChainName (vendor-cni-chain on this
// node) runs <confDir>/vendor-cni-chain/*.conf as a chain of its own, and is no network of the
// pod's in network-status.
func TestMultusAuxiliaryCNIChain(t *testing.T) {
	sysctlFromDroppedConf(t, "vendor-cni-chain", "aux-chain", "arp_ignore", func(c *clustertest.Cluster) {
		if st := networkStatus(t, c, "default", "aux-chain"); len(st) != 1 || st[0].Name != "cbr0" {
			t.Errorf("network-status = %+v, want the cluster network only", st)
		}
	})
}

// readinessIndicatorFile: an ADD that comes before the cluster network is ready waits for it
// (as Multus, up to 45 s) instead of failing the sandbox and leaving the pod to kubelet's back-off.
func TestMultusReadinessIndicatorWait(t *testing.T) {
	c := clustertest.Connect(t)
	ready := filepath.Join(c.Dir, "run", "cluster-network-ready")
	if err := os.Remove(ready); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.WriteFile(ready, nil, 0o644) })
	c.CreatePod(t, "default", "early")
	time.Sleep(4 * time.Second)
	if p, err := c.Kube.CoreV1().Pods("default").Get(context.Background(), "early", metav1.GetOptions{}); err != nil || p.Status.PodIP != "" {
		t.Fatalf("pod got an IP before the cluster network was ready: %v %v", p.Status.PodIP, err)
	}
	if err := os.WriteFile(ready, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.WaitRunning(t, "default", "early", 60*time.Second)
	if waited := time.Since(start); waited > 20*time.Second {
		t.Errorf("pod ran %s after the indicator appeared: ADD did not wait for it", waited)
	}
	if ev := c.Events("default", "early"); strings.Contains(ev, "FailedCreatePodSandBox") {
		t.Errorf("the sandbox failed while waiting:\n%s", ev)
	}
}

// Static pods (kubelet's staticPodPath): the runtime's K8S_POD_UID is the static pod's, not the
// mirror pod's in the API, and ADD must not refuse it; the mirror pod gets network-status, and
// removing the manifest releases everything.
func TestMultusStaticPod(t *testing.T) {
	c := clustertest.Connect(t)
	master := macvlanMaster(t)
	c.CreateNAD(t, "default", "static-net", macvlanConf(c, master, "10.62.0.0/24"), nil)
	manifest := filepath.Join(c.Dir, "static-pods", "static-web.yaml")
	err := os.WriteFile(manifest, []byte(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: static-web
  namespace: default
  annotations:
    k8s.v1.cni.cncf.io/networks: static-net
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: %s
    imagePullPolicy: Never
`, clustertest.Image)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(manifest) })
	mirror := "static-web-" + clustertest.Node
	p := c.WaitRunning(t, "default", mirror, 120*time.Second)
	if _, ok := p.Annotations["kubernetes.io/config.mirror"]; !ok {
		t.Fatalf("%s is not a mirror pod: %v", mirror, p.Annotations)
	}
	st := networkStatus(t, c, "default", mirror)
	if len(st) != 2 || st[1].Name != "default/static-net" || st[1].Interface != "net1" {
		t.Errorf("mirror pod network-status = %+v, want cbr0 and default/static-net on net1", st)
	}
	os.Remove(manifest)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) && len(leaseOwners(c)) > 0 {
		time.Sleep(300 * time.Millisecond)
	}
	if l := leaseOwners(c); len(l) != 0 {
		t.Errorf("leases after the static pod was removed: %v", l)
	}
}
