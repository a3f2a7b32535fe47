// Package clustertest drives the e2e/cluster single-node Kubernetes from Go tests the way a
// user would with kubectl: create a NAD or a pod, wait for it, read its annotations, look into
// its network namespace, delete it.
package clustertest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	nadclient "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/clientset/versioned"
	"github.com/vishvananda/netlink"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// Image is the image every test pod runs (the pause binary; imported by cluster-up).
const Image = "registry.k8s.io/pause:3.10"

// Node is the name the kubelet registers.
const Node = "node1"

// Cluster is a handle on a running e2e cluster.
type Cluster struct {
	Dir    string
	Config *rest.Config
	Kube   kubernetes.Interface
	NADs   nadclient.Interface
}

// Dir returns CLUSTER_DIR or the default the Makefile uses.
func Dir() string {
	if d := os.Getenv("CLUSTER_DIR"); d != "" {
		return d
	}
	return "/tmp/multinet-cluster"
}

// Connect returns the running cluster, or skips the test when none is up.
func Connect(t testing.TB) *Cluster {
	t.Helper()
	d := Dir()
	kc := filepath.Join(d, "kubeconfig")
	if _, err := os.Stat(kc); err != nil {
		t.Skipf("no e2e cluster at %s (make cluster-up, or make e2e-cluster)", d)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{Dir: d, Config: cfg}
	if c.Kube, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if c.NADs, err = nadclient.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	return c
}

// Paths a test uses to install CNI plugins and to reach the kubelet's sockets.
func (c *Cluster) CNIConfDir() string      { return filepath.Join(c.Dir, "net.d") }
func (c *Cluster) CNIBinDir() string       { return filepath.Join(c.Dir, "cni-bin") }
func (c *Cluster) IPAMDir() string         { return filepath.Join(c.Dir, "ipam") }
func (c *Cluster) DevicePluginDir() string { return filepath.Join(c.Dir, "kubelet", "device-plugins") }
func (c *Cluster) PodResourcesSocket() string {
	return filepath.Join(c.Dir, "kubelet", "pod-resources", "kubelet.sock")
}

// CreateNAD creates a NetworkAttachmentDefinition and deletes it when the test ends.
func (c *Cluster) CreateNAD(t testing.TB, namespace, name, config string, annotations map[string]string) *nadv1.NetworkAttachmentDefinition {
	t.Helper()
	nad := &nadv1.NetworkAttachmentDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Annotations: annotations},
		Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: config},
	}
	got, err := c.NADs.K8sCniCncfIoV1().NetworkAttachmentDefinitions(namespace).Create(context.Background(), nad, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create NAD %s/%s: %v", namespace, name, err)
	}
	t.Cleanup(func() {
		_ = c.NADs.K8sCniCncfIoV1().NetworkAttachmentDefinitions(namespace).Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return got
}

// CreatePod creates a pod pinned to the node; mutate adjusts it (annotations, resources...).
// The pod is deleted when the test ends.
func (c *Cluster) CreatePod(t testing.TB, namespace, name string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	t.Helper()
	grace := int64(1)
	noToken := false
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: corev1.PodSpec{
			NodeName:                      Node,
			AutomountServiceAccountToken:  &noToken,
			TerminationGracePeriodSeconds: &grace,
			Containers:                    []corev1.Container{{Name: "app", Image: Image, ImagePullPolicy: corev1.PullNever}},
		},
	}
	for _, m := range mutate {
		m(p)
	}
	got, err := c.Kube.CoreV1().Pods(namespace).Create(context.Background(), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s/%s: %v", namespace, name, err)
	}
	t.Cleanup(func() { c.DeletePod(t, namespace, name) })
	return got
}

// WaitRunning waits for the pod to run and returns it; on timeout it fails with the pod's
// status and events, which carry the CNI error if the sandbox failed.
func (c *Cluster) WaitRunning(t testing.TB, namespace, name string, timeout time.Duration) *corev1.Pod {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		p, err := c.Kube.CoreV1().Pods(namespace).Get(context.Background(), name, metav1.GetOptions{})
		if err == nil && p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s/%s not Running after %s: phase %v err %v\nevents:\n%s", namespace, name, timeout, phase(p), err, c.Events(namespace, name))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func phase(p *corev1.Pod) corev1.PodPhase {
	if p == nil {
		return ""
	}
	return p.Status.Phase
}

// Events returns the pod's events, one per line.
func (c *Cluster) Events(namespace, name string) string {
	evs, err := c.Kube.CoreV1().Events(namespace).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil {
		return err.Error()
	}
	s := ""
	for _, e := range evs.Items {
		s += fmt.Sprintf("  %s %s: %s\n", e.Type, e.Reason, e.Message)
	}
	return s
}

// DeletePod deletes the pod with a 1 s grace period and waits until the API has forgotten it
// (the kubelet removes it only after the runtime tore the sandbox down, CNI DEL included).
func (c *Cluster) DeletePod(t testing.TB, namespace, name string) {
	t.Helper()
	grace := int64(1)
	err := c.Kube.CoreV1().Pods(namespace).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
	if apierrors.IsNotFound(err) {
		return
	}
	if err != nil {
		t.Errorf("delete pod %s/%s: %v", namespace, name, err)
		return
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := c.Kube.CoreV1().Pods(namespace).Get(context.Background(), name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Errorf("pod %s/%s still present 60s after delete", namespace, name)
}

// PodNetNS finds the network namespace (under /var/run/netns, where containerd's CRI plugin
// pins them) whose ifname holds ip.
func PodNetNS(t testing.TB, ifname, ip string) ns.NetNS {
	t.Helper()
	paths, _ := filepath.Glob("/var/run/netns/*")
	for _, p := range paths {
		n, err := ns.GetNS(p)
		if err != nil {
			continue
		}
		found := false
		_ = n.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName(ifname)
			if err != nil {
				return nil
			}
			addrs, _ := netlink.AddrList(l, netlink.FAMILY_ALL)
			for _, a := range addrs {
				if a.IP.Equal(net.ParseIP(ip)) {
					found = true
				}
			}
			return nil
		})
		if found {
			t.Cleanup(func() { n.Close() })
			return n
		}
		n.Close()
	}
	t.Fatalf("no network namespace has %s with %s", ifname, ip)
	return nil
}

// PodResources returns a client of the kubelet's PodResources service.
func (c *Cluster) PodResources(t testing.TB) podresourcesv1.PodResourcesListerClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+c.PodResourcesSocket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return podresourcesv1.NewPodResourcesListerClient(conn)
}

// CreateNamespace creates a namespace with its default ServiceAccount (no controller-manager
// runs here to make it) and deletes it when the test ends.
func (c *Cluster) CreateNamespace(t testing.TB, name string) {
	t.Helper()
	ctx := context.Background()
	_, err := c.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	_, err = c.Kube.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create default service account in %s: %v", name, err)
	}
	t.Cleanup(func() { _ = c.Kube.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{}) })
}

// WaitEvent waits for an event of the pod whose message holds every substring; it returns the
// message.
func (c *Cluster) WaitEvent(t testing.TB, namespace, name string, timeout time.Duration, substrings ...string) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		evs, err := c.Kube.CoreV1().Events(namespace).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
		if err == nil {
			for _, e := range evs.Items {
				all := true
				for _, s := range substrings {
					all = all && strings.Contains(e.Message, s)
				}
				if all {
					return e.Message
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s/%s: no event mentioning %q after %s; events:\n%s", namespace, name, substrings, timeout, c.Events(namespace, name))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// MultinetCacheDir is the meta-plugin's cache dir on this node (set by cluster-up).
func (c *Cluster) MultinetCacheDir() string { return filepath.Join(c.Dir, "multinet-cache") }

// MultinetKubeconfig is the plugin's own kubeconfig (its service-account token).
func (c *Cluster) MultinetKubeconfig() string {
	return filepath.Join(c.Dir, "multinet.d", "kubeconfig")
}

// Runtime returns a CRI client of the node's containerd, to act on sandboxes as kubelet does.
func (c *Cluster) Runtime(t testing.TB) criv1.RuntimeServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+filepath.Join(c.Dir, "containerd", "containerd.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return criv1.NewRuntimeServiceClient(conn)
}

// Sandboxes returns the IDs of the pod's sandboxes the runtime knows, ready or not.
func (c *Cluster) Sandboxes(t testing.TB, namespace, name string) []string {
	t.Helper()
	resp, err := c.Runtime(t).ListPodSandbox(context.Background(), &criv1.ListPodSandboxRequest{Filter: &criv1.PodSandboxFilter{
		LabelSelector: map[string]string{"io.kubernetes.pod.namespace": namespace, "io.kubernetes.pod.name": name}}})
	if err != nil {
		t.Fatalf("list sandboxes of %s/%s: %v", namespace, name, err)
	}
	var ids []string
	for _, s := range resp.Items {
		ids = append(ids, s.Id)
	}
	return ids
}

// StopAPIServer kills kube-apiserver and returns a function that starts it again and waits
// until it answers; the restart also runs when the test ends, whatever happened.
func (c *Cluster) StopAPIServer(t testing.TB) (restart func()) {
	t.Helper()
	pidFile := filepath.Join(c.Dir, "run", "kube-apiserver.pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	proc, err := os.FindProcess(pid)
	if err != nil {
		t.Fatal(err)
	}
	_ = proc.Kill()
	_, _ = proc.Wait()
	for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	started := false
	restart = func() {
		if started {
			return
		}
		started = true
		logf, err := os.OpenFile(filepath.Join(c.Dir, "logs", "kube-apiserver.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer logf.Close()
		cmd := exec.Command(filepath.Join(c.Dir, "run", "kube-apiserver.sh"))
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			t.Fatalf("restart kube-apiserver: %v", err)
		}
		os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
		_ = cmd.Process.Release()
		deadline := time.Now().Add(90 * time.Second)
		for time.Now().Before(deadline) {
			if _, err := c.Kube.CoreV1().Namespaces().Get(context.Background(), "default", metav1.GetOptions{}); err == nil {
				return
			}
			time.Sleep(300 * time.Millisecond)
		}
		t.Fatal("kube-apiserver not answering 90s after restart")
	}
	t.Cleanup(restart)
	return restart
}

// Thick reports whether the node's CNI runs in thick mode (the conf names multinet-shim and
// multinetd serves it; MULTINET_MODE=thick at cluster-up).
func (c *Cluster) Thick() bool {
	b, err := os.ReadFile(filepath.Join(c.CNIConfDir(), "00-multinet.conflist"))
	return err == nil && strings.Contains(string(b), `"multinet-shim"`)
}

// AgentMetrics is the address of multinetd's /metrics, /healthz and /readyz.
func (c *Cluster) AgentMetrics() string {
	b, _ := os.ReadFile(filepath.Join(c.Dir, "run", "multinetd.metrics"))
	return strings.TrimSpace(string(b))
}

// KillAgent SIGKILLs multinetd (a crash, an OOM kill) and returns a function that starts it
// again and waits until it serves; the restart also runs when the test ends.
func (c *Cluster) KillAgent(t testing.TB) (restart func()) {
	t.Helper()
	pidFile := filepath.Join(c.Dir, "run", "multinetd.pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("multinetd pid: %v (is the cluster in thick mode?)", err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	started := false
	restart = func() {
		if started {
			return
		}
		started = true
		logf, err := os.OpenFile(filepath.Join(c.Dir, "logs", "multinetd.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer logf.Close()
		cmd := exec.Command(filepath.Join(c.Dir, "run", "multinetd.sh"))
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			t.Fatalf("restart multinetd: %v", err)
		}
		os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
		_ = cmd.Process.Release()
		sock := filepath.Join(c.Dir, "run", "multinet", "multinet.sock")
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			if conn, err := net.Dial("unix", sock); err == nil {
				conn.Close()
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatal("multinetd not serving 60s after restart")
	}
	t.Cleanup(restart)
	return restart
}
