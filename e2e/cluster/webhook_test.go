//go:build e2e_cluster

package cluster

import (
	"bytes"
	"context"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	admregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/multinet-io/multinet/e2e/cluster/clustertest"
	"github.com/multinet-io/multinet/podresources"
)

const (
	whConfig = "multinet-webhook-e2e"
	whSecret = "multinet-webhook-e2e-tls"
)

type hostWebhook struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func (w *hostWebhook) logText() string { b, _ := os.ReadFile(w.log); return string(b) }

func (w *hostWebhook) stop() {
	if w.cmd.ProcessState == nil {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		<-w.done
	}
}

// startHostWebhook registers a MutatingWebhookConfiguration scoped like deploy/webhook's, with
// clientConfig.url on 127.0.0.1 (the API server of this cluster cannot reach pod networking),
// and runs the built multinet-webhook on the host. It waits until the webhook has patched the
// caBundle and the API server calls it.
// probeNAD is the NAD (with a resourceName) the readiness probe names; extra flags override.
func startHostWebhook(t *testing.T, c *clustertest.Cluster, probeNAD string, extra ...string) *hostWebhook {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	fail, none := admregv1.Fail, admregv1.SideEffectClassNone
	url := "https://" + addr + "/mutate"
	cfg := &admregv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: whConfig},
		Webhooks: []admregv1.MutatingWebhook{{
			Name:                    "network-resources.multinet.io",
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             &none,
			FailurePolicy:           &fail,
			ClientConfig:            admregv1.WebhookClientConfig{URL: &url},
			Rules: []admregv1.RuleWithOperations{{Operations: []admregv1.OperationType{admregv1.Create},
				Rule: admregv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kube-system"}}}},
			MatchConditions: []admregv1.MatchCondition{{Name: "names-networks",
				Expression: `has(object.metadata.annotations) && ('k8s.v1.cni.cncf.io/networks' in object.metadata.annotations || 'v1.multus-cni.io/default-network' in object.metadata.annotations)`}},
		}},
	}
	mwcs := c.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations()
	_ = mwcs.Delete(context.Background(), whConfig, metav1.DeleteOptions{}) // an interrupted run's
	if _, err := mwcs.Create(context.Background(), cfg, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create MutatingWebhookConfiguration: %v", err)
	}
	t.Cleanup(func() { _ = mwcs.Delete(context.Background(), whConfig, metav1.DeleteOptions{}) })
	secrets := c.Kube.CoreV1().Secrets("kube-system")
	_ = secrets.Delete(context.Background(), whSecret, metav1.DeleteOptions{})
	t.Cleanup(func() { _ = secrets.Delete(context.Background(), whSecret, metav1.DeleteOptions{}) })

	work := t.TempDir()
	bin := buildTool(t, "./cmd/multinet-webhook", work)
	w := &hostWebhook{log: filepath.Join(work, "webhook.log"), done: make(chan struct{})}
	logf, err := os.Create(w.log)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--listen", addr, "--namespace", "kube-system", "--secret-name", whSecret,
		"--webhook-config-name", whConfig, "--service-name", "multinet-webhook", "--extra-san", "127.0.0.1",
		"--kubeconfig", filepath.Join(c.Dir, "kubeconfig"), "--sync-interval", "5s", "--ca-overlap", "30s"}
	w.cmd = exec.Command(bin, append(args, extra...)...) // later flags win
	w.cmd.Stdout, w.cmd.Stderr = logf, logf
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = w.cmd.Wait(); close(w.done) }()
	t.Cleanup(func() {
		w.stop()
		logf.Close()
		if t.Failed() {
			t.Logf("webhook log:\n%s", w.logText())
		}
	})

	// Ready when a dry-run of an annotated pod comes back mutated: the caBundle is patched and
	// the API server has loaded the configuration and trusts our certificate.
	probe := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "wh-probe", Annotations: map[string]string{"k8s.v1.cni.cncf.io/networks": probeNAD}},
		Spec:       corev1.PodSpec{NodeName: clustertest.Node, Containers: []corev1.Container{{Name: "app", Image: clustertest.Image}}},
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, err := c.Kube.CoreV1().Pods("default").Create(context.Background(), probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err == nil && len(got.Spec.Containers[0].Resources.Limits) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("API server never got a mutated pod from the webhook: %v\nwebhook log:\n%s", err, w.logText())
		}
		time.Sleep(500 * time.Millisecond)
	}
	got, _ := mwcs.Get(context.Background(), whConfig, metav1.GetOptions{})
	sec, err := secrets.Get(context.Background(), whSecret, metav1.GetOptions{})
	if err != nil || !bytes.Equal(got.Webhooks[0].ClientConfig.CABundle, sec.Data["ca-bundle.crt"]) {
		t.Fatalf("caBundle is not the CA bundle of the webhook's Secret (%v)", err)
	}
	return w
}

// A pod that names an SR-IOV NAD and asks for no resources: the webhook adds the VF request,
// kubelet allocates a VF from our device plugin, the pod runs with net1 on it and the
// network-status reaches the app at /etc/podnetinfo. A missing NAD is refused by name; a pod
// without networks is never touched, not even when the webhook is down.
func TestWebhookInjectsVFRequest(t *testing.T) {
	c := clustertest.Connect(t)
	tree, _ := simSRIOVNode(t, c, 1)
	p := startDevicePlugin(t, c, tree.Root, `{"resourceList":[{"resourceName":"mn_sriov_net","selectors":{"pfNames":["mne2epf"]}}]}`)
	waitNodeRes(t, c, p, "registered", sriovRes, 1, 1)
	c.CreateNAD(t, "default", "wh-sriov", `{"cniVersion": "1.0.0", "type": "sriov", "ipam": {"type": "host-local",
	  "dataDir": "`+c.IPAMDir()+`", "subnet": "10.56.218.0/24"}}`, map[string]string{"k8s.v1.cni.cncf.io/resourceName": sriovRes})
	w := startHostWebhook(t, c, "wh-sriov")

	created := c.CreatePod(t, "default", "wh-cnf", withNetworks("wh-sriov"))
	res := created.Spec.Containers[0].Resources
	if r, l := res.Requests[sriovRes], res.Limits[sriovRes]; r.Value() != 1 || l.Value() != 1 {
		t.Fatalf("stored pod: requests %v limits %v, want %s: 1 from the webhook", res.Requests, res.Limits, sriovRes)
	}
	pod := c.WaitRunning(t, "default", "wh-cnf", 90*time.Second)
	ids, err := podresources.DeviceIDs(context.Background(), podresources.Config{Socket: c.PodResourcesSocket()}, "default", "wh-cnf", string(pod.UID), sriovRes)
	if err != nil || len(ids) != 1 {
		t.Fatalf("kubelet allocated %v, %v", ids, err)
	}
	st := networkStatus(t, c, "default", "wh-cnf")
	if len(st) != 2 || st[1].Interface != "net1" || st[1].DeviceInfo == nil || st[1].DeviceInfo.Pci == nil || st[1].DeviceInfo.Pci.PciAddress != ids[0] {
		t.Fatalf("network-status %+v; kubelet allocated %s", st, ids[0])
	}
	// What `multinetctl dpdk-args` reads inside the pod: the downward-API file, refreshed by
	// kubelet once CNI has written network-status.
	file := filepath.Join(c.Dir, "kubelet", "pods", string(pod.UID), "volumes", "kubernetes.io~downward-api", "podnetinfo", "annotations")
	start := time.Now()
	deadline := start.Add(150 * time.Second)
	for {
		b, _ := os.ReadFile(file)
		if strings.Contains(string(b), "k8s.v1.cni.cncf.io/network-status") && strings.Contains(string(b), ids[0]) {
			t.Logf("/etc/podnetinfo/annotations has network-status %s after the pod ran", time.Since(start).Round(time.Second))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never showed network-status with %s:\n%s", file, ids[0], b)
		}
		time.Sleep(time.Second)
	}

	// A missing NAD: refused, by name.
	_, err = c.Kube.CoreV1().Pods("default").Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "wh-missing", Annotations: map[string]string{"k8s.v1.cni.cncf.io/networks": "wh-sriov,wh-nope"}},
		Spec:       corev1.PodSpec{NodeName: clustertest.Node, Containers: []corev1.Container{{Name: "app", Image: clustertest.Image}}},
	}, metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), "default/wh-nope") {
		t.Fatalf("pod naming a missing NAD: %v, want denied naming default/wh-nope", err)
	}
	t.Logf("missing NAD: %v", err)

	// Without networks: untouched while the webhook runs, and created when it is down.
	plain := c.CreatePod(t, "default", "wh-plain")
	for _, v := range plain.Spec.Volumes {
		if v.Name == "podnetinfo" {
			t.Errorf("pod without networks got the podnetinfo volume")
		}
	}
	if len(plain.Spec.Containers[0].Resources.Limits) != 0 {
		t.Errorf("pod without networks got limits %v", plain.Spec.Containers[0].Resources.Limits)
	}
	w.stop()
	c.CreatePod(t, "default", "wh-plain-down")
	c.WaitRunning(t, "default", "wh-plain-down", 60*time.Second)
	_, err = c.Kube.CoreV1().Pods("default").Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "wh-down", Annotations: map[string]string{"k8s.v1.cni.cncf.io/networks": "wh-sriov"}},
		Spec:       corev1.PodSpec{NodeName: clustertest.Node, Containers: []corev1.Container{{Name: "app", Image: clustertest.Image}}},
	}, metav1.CreateOptions{})
	if err == nil {
		t.Error("annotated pod admitted with the webhook down: it would run without its VF")
	} else {
		t.Logf("annotated pod with the webhook down: %v", err)
	}
}

// The manifests of deploy/webhook (and the host-url component) are valid for this API server.
func TestWebhookManifestsValid(t *testing.T) {
	c := clustertest.Connect(t)
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("no kubectl")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(fmt.Sprintf(
		"resources: [%[1]s]\ncomponents: [%[1]s/host-url]\nimages: [{name: registry.local/multinet/multinet, newTag: e2e}]\n",
		"webhook")), 0o644); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs("../../deploy/webhook")
	// A copy, not a symlink: kustomize refuses files outside the kustomization's root.
	if out, err := exec.Command("cp", "-r", abs, filepath.Join(dir, "webhook")).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, k := range []string{abs, dir} {
		out, err := exec.Command(kubectl, "--kubeconfig", filepath.Join(c.Dir, "kubeconfig"), "apply", "--dry-run=server", "-k", k).CombinedOutput()
		if err != nil {
			t.Errorf("kubectl apply --dry-run=server -k %s: %v\n%s", k, err, out)
		}
	}
}

// The CA rotates under load against the real API server: one-minute lifetimes, a pod admission
// every 300ms, and not one of them may fail while the next CA enters caBundle, signs the
// serving certificate and the old CA leaves.
func TestWebhookCARotation(t *testing.T) {
	c := clustertest.Connect(t)
	c.CreateNAD(t, "default", "wh-rot", `{"cniVersion": "1.0.0", "type": "sriov"}`, map[string]string{"k8s.v1.cni.cncf.io/resourceName": sriovRes})
	w := startHostWebhook(t, c, "wh-rot", "--ca-validity", "60s", "--cert-validity", "60s", "--sync-interval", "1s", "--ca-overlap", "5s")
	mwcs := c.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "wh-rot", Annotations: map[string]string{"k8s.v1.cni.cncf.io/networks": "wh-rot"}},
		Spec:       corev1.PodSpec{NodeName: clustertest.Node, Containers: []corev1.Container{{Name: "app", Image: clustertest.Image}}},
	}
	cas := func() [][]byte { // DER of each CA in caBundle, current first
		cfg, err := mwcs.Get(context.Background(), whConfig, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var out [][]byte
		for rest := cfg.Webhooks[0].ClientConfig.CABundle; ; {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				return out
			}
			out = append(out, b.Bytes)
		}
	}
	start := cas()[0]
	var admitted, failed, maxCAs int
	var rotated bool
	for end := time.Now().Add(80 * time.Second); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
		got, err := c.Kube.CoreV1().Pods("default").Create(context.Background(), pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil || len(got.Spec.Containers[0].Resources.Limits) == 0 {
			failed++
			t.Errorf("admission during rotation: %v", err)
		} else {
			admitted++
		}
		now := cas()
		maxCAs = max(maxCAs, len(now))
		rotated = rotated || !bytes.Equal(now[0], start)
	}
	t.Logf("%d pods admitted, %d failed; caBundle held up to %d CAs; rotated: %v", admitted, failed, maxCAs, rotated)
	if !rotated || maxCAs < 2 {
		t.Errorf("no rotation seen in 80s of a 60s CA (rotated %v, at most %d CAs in caBundle)\n%s", rotated, maxCAs, w.logText())
	}
	for _, ca := range cas() {
		if bytes.Equal(ca, start) {
			t.Errorf("the first CA, expired, is still in caBundle")
		}
	}
}
