//go:build bench_cluster

// Package cluster measures pod create-to-Running latency on the real single-node cluster of
// e2e/cluster (`make bench-pods`): 20 pods at once with eth0 only, then with eth0 + 1 VF from
// our device plugin, with multinet as the node's CNI and, when BENCH_MULTUS names a Multus
// binary, again with Multus's thin plugin as the node's CNI (same bridge, same sriov delegate).
package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/multinet-io/multinet/benchmarks"
	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/e2e/cluster/clustertest"
	"github.com/multinet-io/multinet/pci/pcitest"
)

const (
	nPods    = 20
	benchPF  = "0000:d8:00.0"
	benchRes = "intel.com/mn_bench_vf"
	podNS    = "default"
)

type result struct {
	Name  string  `json:"name"`
	Stack string  `json:"stack"`
	Pods  int     `json:"pods"`
	P50   float64 `json:"running_p50_ms"`
	P90   float64 `json:"running_p90_ms"`
	Max   float64 `json:"running_max_ms"`
	Error string  `json:"error,omitempty"`
}

func TestPodCreateToRunning(t *testing.T) {
	c := clustertest.Connect(t)
	// The helper's client throttles at 5 QPS: 20 creates would wait on it, not on the node.
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(c.Dir, "kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 200, 200
	if c.Kube, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	simNode(t, c, nPods)
	startDevicePlugin(t, c)
	waitAllocatable(t, c, nPods)
	c.CreateNAD(t, podNS, "sriov-bench", `{"cniVersion": "1.0.0", "type": "sriov", "ipam": {"type": "host-local",
	  "dataDir": "`+c.IPAMDir()+`", "subnet": "10.56.218.0/24"}}`, map[string]string{"k8s.v1.cni.cncf.io/resourceName": benchRes})

	stacks := []string{"multinet"}
	if os.Getenv("BENCH_MULTUS") != "" {
		stacks = append(stacks, "multus")
	}
	// Two rounds, the stacks alternating, so drift on the shared machine hits both.
	lat := map[string][]time.Duration{}
	errs := map[string]string{}
	for round := 0; round < 2; round++ {
		for _, stack := range stacks {
			restore := func() {}
			if stack == "multus" {
				restore = useMultus(t, c, os.Getenv("BENCH_MULTUS"))
			}
			for _, name := range []string{"eth0", "eth0+1vf"} {
				l, err := burst(t, c, stack, name == "eth0+1vf")
				lat[stack+" "+name] = append(lat[stack+" "+name], l...)
				if err != nil && errs[stack+" "+name] == "" {
					errs[stack+" "+name] = err.Error()
				}
				s := benchmarks.Summarize(l)
				t.Logf("round %d %-9s %-9s %d pods: create-to-Running p50 %.0f ms, max %.0f ms %v", round, stack, name, len(l), s.P50, s.Max, err)
			}
			restore()
		}
	}
	var results []result
	for _, stack := range stacks {
		for _, name := range []string{"eth0", "eth0+1vf"} {
			s := benchmarks.Summarize(lat[stack+" "+name])
			r := result{Name: name, Stack: stack, Pods: s.Count, P50: s.P50, P90: s.P90, Max: s.Max, Error: errs[stack+" "+name]}
			t.Logf("%-9s %-9s %d pods: create-to-Running p50 %.0f ms, p90 %.0f ms, max %.0f ms %s", stack, name, r.Pods, r.P50, r.P90, r.Max, r.Error)
			results = append(results, r)
		}
	}
	out := filepath.Join("..", "out", "pods.json")
	os.MkdirAll(filepath.Dir(out), 0o755)
	b, _ := json.MarshalIndent(results, "", "  ")
	os.WriteFile(out, append(b, '\n'), 0o644)
	for _, r := range results {
		if r.Stack == "multinet" && r.Error != "" {
			t.Errorf("multinet %s: %s", r.Name, r.Error)
		}
	}
}

// burst creates nPods pods at once and returns each one's time from its create call to the
// first time the API shows it Running (the create call's own time excluded); then deletes
// them all (their VFs come back).
func burst(t *testing.T, c *clustertest.Cluster, stack string, vf bool) ([]time.Duration, error) {
	ctx := context.Background()
	label := fmt.Sprintf("%s-%v-%d", stack, vf, time.Now().UnixNano()%1e6)
	w, err := c.Kube.CoreV1().Pods(podNS).Watch(ctx, metav1.ListOptions{LabelSelector: "bench=" + label})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	created := make([]time.Time, nPods)
	var wg sync.WaitGroup
	grace, noToken := int64(1), false
	for i := 0; i < nPods; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-%s-%d", label, i), Namespace: podNS,
				Labels: map[string]string{"bench": label}},
				Spec: corev1.PodSpec{NodeName: clustertest.Node, AutomountServiceAccountToken: &noToken, TerminationGracePeriodSeconds: &grace,
					Containers: []corev1.Container{{Name: "app", Image: clustertest.Image, ImagePullPolicy: corev1.PullNever}}}}
			if vf {
				p.Annotations = map[string]string{nadv1.NetworkAttachmentAnnot: "sriov-bench"}
				p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{benchRes: resource.MustParse("1")}
			}
			if _, err := c.Kube.CoreV1().Pods(podNS).Create(ctx, p, metav1.CreateOptions{}); err != nil {
				t.Errorf("create %s: %v", p.Name, err)
			}
			created[i] = time.Now()
		}()
	}
	wg.Wait()
	running := map[string]time.Time{}
	deadline := time.After(3 * time.Minute)
	var failure error
loop:
	for len(running) < nPods {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				failure = fmt.Errorf("watch closed")
				break loop
			}
			if p, ok := ev.Object.(*corev1.Pod); ok && p.Status.Phase == corev1.PodRunning {
				if _, seen := running[p.Name]; !seen {
					running[p.Name] = time.Now()
				}
			}
		case <-deadline:
			failure = fmt.Errorf("%d of %d pods Running after 3 minutes", len(running), nPods)
			break loop
		}
	}
	var lat []time.Duration
	for i := 0; i < nPods; i++ {
		if at, ok := running[fmt.Sprintf("bench-%s-%d", label, i)]; ok {
			lat = append(lat, at.Sub(created[i]))
		}
	}
	if failure != nil {
		t.Logf("events of the first pod:\n%s", c.Events(podNS, fmt.Sprintf("bench-%s-0", label)))
	}
	for i := 0; i < nPods; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); c.DeletePod(t, podNS, fmt.Sprintf("bench-%s-%d", label, i)) }()
	}
	wg.Wait()
	return lat, failure
}

// useMultus makes Multus's thin plugin the node's CNI for the rest of the test: its binary in
// the CNI bin dir and its conflist (as its thin_entrypoint writes it: the bridge conflist as the
// only delegate, the same kubeconfig) first in the conf dir; multinet's conf is set aside
// until restore.
func useMultus(t *testing.T, c *clustertest.Cluster, bin string) (restore func()) {
	t.Helper()
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(c.CNIBinDir(), "multus")
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
	master, err := os.ReadFile(filepath.Join(c.CNIConfDir(), "10-bridge.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]interface{}
	if err := json.Unmarshal(master, &m); err != nil {
		t.Fatal(err)
	}
	conf, _ := json.Marshal(map[string]interface{}{"cniVersion": m["cniVersion"], "name": "multus-cni-network",
		"plugins": []interface{}{map[string]interface{}{"type": "multus", "capabilities": map[string]bool{"portMappings": true},
			"kubeconfig": c.MultinetKubeconfig(), "cniDir": filepath.Join(c.Dir, "multus-cache"), "binDir": c.CNIBinDir(),
			"delegates": []interface{}{m}}}})
	own := filepath.Join(c.CNIConfDir(), "00-multinet.conflist")
	if err := os.Rename(own, own+".bench-aside"); err != nil {
		t.Fatal(err)
	}
	mc := filepath.Join(c.CNIConfDir(), "00-multus.conflist")
	if err := os.WriteFile(mc, conf, 0o644); err != nil {
		t.Fatal(err)
	}
	restore = func() {
		os.Remove(mc)
		os.Rename(own+".bench-aside", own)
		os.Remove(dst)
		time.Sleep(2 * time.Second)
	}
	t.Cleanup(restore)
	time.Sleep(2 * time.Second) // containerd reloads net.d on change
	return restore
}

// simNode makes the node a simulated SR-IOV node as e2e/cluster's SR-IOV test does: veth links
// in the node's namespace named as VFs in a fake sysfs tree the CNI plugins read.
func simNode(t *testing.T, c *clustertest.Cluster, nVFs int) {
	t.Helper()
	var links []netlink.Link
	for i := -1; i < nVFs; i++ {
		name := fmt.Sprintf("mnbv%d", i)
		if i < 0 {
			name = "mnbpf"
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
	}
	t.Cleanup(func() {
		for _, l := range links {
			if cur, err := netlink.LinkByName(l.Attrs().Name); err == nil {
				netlink.LinkDel(cur)
			}
		}
	})
	tree := pcitest.New(t)
	tree.AddPF(pcitest.PF{Address: benchPF, Vendor: "8086", Device: "1593", Driver: "ice", Netdev: "mnbpf", TotalVFs: nVFs, NUMANode: 0})
	for i := 0; i < nVFs; i++ {
		tree.AddVF(pcitest.VF{PF: benchPF, Index: i, Address: fmt.Sprintf("0000:d8:%02x.%d", 2+i/8, i%8), Vendor: "8086", Device: "1889",
			Driver: "iavf", Netdev: fmt.Sprintf("mnbv%d", i)})
	}
	tree.SetOperState(benchPF, "mnbpf", "up")
	link := filepath.Join(c.Dir, "sim-sysfs")
	os.Remove(link)
	if err := os.Symlink(tree.Root, link); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(link) })
}

func startDevicePlugin(t *testing.T, c *clustertest.Cluster) {
	t.Helper()
	work := t.TempDir()
	bin := filepath.Join(work, "multinet-deviceplugin")
	build := exec.Command("go", "build", "-o", bin, "./cmd/multinet-deviceplugin")
	build.Dir = "../.."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build device plugin: %v\n%s", err, out)
	}
	cfg := filepath.Join(work, "config.json")
	os.WriteFile(cfg, []byte(`{"resourceList":[{"resourceName":"mn_bench_vf","selectors":{"pfNames":["mnbpf"]}}]}`), 0o644)
	logf, _ := os.Create(filepath.Join(work, "plugin.log"))
	cmd := exec.Command(bin, "--config", cfg, "--sysfs-root", filepath.Join(c.Dir, "sim-sysfs"), "--device-plugin-dir", c.DevicePluginDir())
	cmd.Env = append(os.Environ(), devinfo.EnvBase+"="+filepath.Join(c.Dir, "devinfo"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait(); logf.Close() })
}

func waitAllocatable(t *testing.T, c *clustertest.Cluster, n int64) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		node, err := c.Kube.CoreV1().Nodes().Get(context.Background(), clustertest.Node, metav1.GetOptions{})
		if err == nil {
			if q, ok := node.Status.Allocatable[benchRes]; ok && q.Value() == n {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node never showed %d allocatable %s", n, benchRes)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
