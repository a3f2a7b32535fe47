//go:build e2e_cluster

package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/multinet-io/multinet/e2e/cluster/clustertest"
	"github.com/multinet-io/multinet/podresources"
)

// installed is an install of multinet on the e2e cluster as an operator does it: a
// kustomization of one's own over deploy/overlays/e2e, applied with kubectl.
type installed struct {
	c   *clustertest.Cluster
	dir string // the operator's kustomization
}

// installCluster is the cluster of the install pass (MULTINET_MODE=none: nothing of multinet's
// until the test installs it) and the image make image wrote.
func installCluster(t *testing.T) (*clustertest.Cluster, string) {
	c := clustertest.Connect(t)
	if b, _ := os.ReadFile(filepath.Join(c.Dir, "run", "mode")); strings.TrimSpace(string(b)) != "none" {
		t.Skip("the cluster runs its own multinet (make e2e-cluster-install brings one up without it)")
	}
	tar := os.Getenv("MULTINET_IMAGE_TAR")
	if tar == "" {
		t.Skip("MULTINET_IMAGE_TAR unset (make e2e-cluster-install builds the image and sets it)")
	}
	return c, tar
}

// kubectl runs the cluster's kubectl v1.34 as an operator would and returns its output.
func kubectl(t *testing.T, c *clustertest.Cluster, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(c.Dir, "tools", "kubectl"), append([]string{"--kubeconfig", filepath.Join(c.Dir, "kubeconfig")}, args...)...)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return string(b)
}

// importImage imports an image archive into the node's containerd and returns its reference.
func importImage(t *testing.T, c *clustertest.Cluster, tar string) string {
	t.Helper()
	out, err := exec.Command("tar", "xOf", tar, "manifest.json").Output()
	if err != nil {
		t.Fatalf("%s: manifest.json: %v", tar, err)
	}
	var m []struct{ RepoTags []string }
	if err := json.Unmarshal(out, &m); err != nil || len(m) != 1 || len(m[0].RepoTags) == 0 {
		t.Fatalf("%s: manifest.json %s: %v", tar, out, err)
	}
	if b, err := exec.Command("ctr", "-a", filepath.Join(c.Dir, "containerd", "containerd.sock"), "-n", "k8s.io", "images", "import", tar).CombinedOutput(); err != nil {
		t.Fatalf("import %s: %v\n%s", tar, err, b)
	}
	return m[0].RepoTags[0]
}

// writeKustomization writes the operator's kustomization: the e2e overlay, this cluster's dir
// and API port, the device plugin's config.json and the image tag.
func (in *installed) writeKustomization(t *testing.T, ref, dpConfig string) {
	t.Helper()
	overlay, err := filepath.Abs("../../deploy/overlays/e2e")
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(in.dir, overlay) // kustomize takes no absolute resource paths
	if err != nil {
		t.Fatal(err)
	}
	port, err := os.ReadFile(filepath.Join(in.c.Dir, "run", "api-port"))
	if err != nil {
		t.Fatal(err)
	}
	name, tag, _ := strings.Cut(ref, ":")
	k := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- %s
configMapGenerator:
- name: multinet-agent
  behavior: merge
  literals:
  - CLUSTER_DIR=%s
- name: multinet-e2e-api
  namespace: kube-system
  behavior: merge
  literals:
  - KUBERNETES_SERVICE_PORT=%s
- name: multinet-deviceplugin
  behavior: merge
  files:
  - config.json
images:
- name: %s
  newTag: %s
`, rel, in.c.Dir, strings.TrimSpace(string(port)), name, tag)
	writeConfig(t, filepath.Join(in.dir, "config.json"), dpConfig)
	writeConfig(t, filepath.Join(in.dir, "kustomization.yaml"), k)
}

// waitRolledOut waits until the DaemonSet runs image on every node, Ready, and returns the
// agent pod.
func (in *installed) waitRolledOut(t *testing.T, image string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		ds, err := in.c.Kube.AppsV1().DaemonSets("kube-system").Get(ctx, "multinet", metav1.GetOptions{})
		if err == nil && ds.Status.ObservedGeneration == ds.Generation && ds.Status.DesiredNumberScheduled == 1 &&
			ds.Status.UpdatedNumberScheduled == 1 && ds.Status.NumberReady == 1 && ds.Status.NumberAvailable == 1 {
			pods, err := in.c.Kube.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=multinet"})
			if err == nil && len(pods.Items) == 1 && pods.Items[0].Spec.Containers[0].Image == image && pods.Items[0].DeletionTimestamp == nil {
				return &pods.Items[0]
			}
		}
		if time.Now().After(deadline) {
			status := ""
			if ds != nil {
				status = fmt.Sprintf("%+v", ds.Status)
			}
			pods, _ := in.c.Kube.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=multinet"})
			for _, p := range pods.Items {
				status += fmt.Sprintf("\npod %s: %+v\nevents:\n%s", p.Name, p.Status.ContainerStatuses, in.c.Events("kube-system", p.Name))
			}
			t.Fatalf("DaemonSet multinet not rolled out to %s after 3m: %v %s\n%s", image, err, status, in.agentLog())
		}
		time.Sleep(time.Second)
	}
}

// agentLog is the agent containers' logs as the runtime wrote them (kubectl logs needs node
// addresses this loopback node does not publish).
func (in *installed) agentLog() string {
	files, _ := filepath.Glob("/var/log/pods/kube-system_multinet-*/multinetd/*.log")
	var b strings.Builder
	for _, f := range files {
		data, _ := os.ReadFile(f)
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) > 30 {
			lines = lines[len(lines)-30:]
		}
		fmt.Fprintf(&b, "=== %s\n%s\n", f, strings.Join(lines, "\n"))
	}
	return b.String()
}

// vfPod is a pod on the SR-IOV NAD with no resources section: the installed webhook adds the
// VF request from the NAD's resourceName.
func vfPod(p *corev1.Pod) { withNetworks("sriov-net")(p) }

// createVFPod creates a vfPod and checks the webhook gave its container one VF in requests and
// limits. With retry, a refusal because the webhook is not serving (its pod being replaced in a
// rolling update: failurePolicy Fail) is retried, as a ReplicaSet would.
func createVFPod(t *testing.T, c *clustertest.Cluster, name string, retry bool) {
	t.Helper()
	grace, noToken := int64(1), false
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: clustertest.Node, AutomountServiceAccountToken: &noToken, TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{Name: "app", Image: clustertest.Image, ImagePullPolicy: corev1.PullNever}}},
	}
	vfPod(p)
	deadline := time.Now().Add(90 * time.Second)
	for {
		got, err := c.Kube.CoreV1().Pods("default").Create(context.Background(), p, metav1.CreateOptions{})
		if err == nil {
			t.Cleanup(func() { c.DeletePod(t, "default", name) })
			ctr := got.Spec.Containers[0].Resources
			if q := ctr.Limits[sriovRes]; q.Value() != 1 {
				t.Errorf("pod %s: limits %v: the webhook did not add one %s", name, ctr.Limits, sriovRes)
			}
			if q := ctr.Requests[sriovRes]; q.Value() != 1 {
				t.Errorf("pod %s: requests %v: the webhook did not add one %s", name, ctr.Requests, sriovRes)
			}
			return
		}
		if !retry || time.Now().After(deadline) || !strings.Contains(err.Error(), "failed calling webhook") {
			t.Fatalf("create pod %s: %v", name, err)
		}
		t.Logf("create pod %s: %v (retried)", name, err)
		time.Sleep(time.Second)
	}
}

// waitWebhook waits until the webhook Deployment serves with image.
func (in *installed) waitWebhook(t *testing.T, image string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		d, err := in.c.Kube.AppsV1().Deployments("kube-system").Get(context.Background(), "multinet-webhook", metav1.GetOptions{})
		if err == nil && d.Status.ObservedGeneration == d.Generation && d.Status.UpdatedReplicas == 1 && d.Status.AvailableReplicas == 1 &&
			d.Spec.Template.Spec.Containers[0].Image == image {
			return
		}
		if time.Now().After(deadline) {
			st := ""
			if d != nil {
				st = fmt.Sprintf("%+v", d.Status)
			}
			t.Fatalf("webhook Deployment not available with %s after 2m: %v %s", image, err, st)
		}
		time.Sleep(time.Second)
	}
}

// attachedVF checks a VF pod as its user would: Running, network-status with net1 on the VF
// kubelet allocated (device-info included), net1 in the pod with that VF's MAC and the address
// network-status names. It returns the VF's PCI address and net1's address.
func attachedVF(t *testing.T, c *clustertest.Cluster, name string, macs map[string]string) (vf, ip string) {
	t.Helper()
	pod := c.WaitRunning(t, "default", name, 120*time.Second)
	ids, err := podresources.DeviceIDs(context.Background(), podresources.Config{Socket: c.PodResourcesSocket()}, "default", name, string(pod.UID), sriovRes)
	if err != nil || len(ids) != 1 {
		t.Fatalf("%s: kubelet allocated %v, %v", name, ids, err)
	}
	st := networkStatus(t, c, "default", name)
	if len(st) != 2 || st[1].Name != "default/sriov-net" || st[1].Interface != "net1" || len(st[1].IPs) != 1 || st[1].DeviceInfo == nil ||
		st[1].DeviceInfo.Pci == nil || st[1].DeviceInfo.Pci.PciAddress != ids[0] {
		t.Fatalf("%s: network-status %+v; kubelet allocated %s", name, st, ids[0])
	}
	vfNetdev := "mne2ev" + ids[0][len(ids[0])-1:]
	clustertest.PodNetNS(t, "eth0", pod.Status.PodIP).Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("net1")
		if err != nil || l.Attrs().HardwareAddr.String() != macs[vfNetdev] {
			t.Errorf("%s: net1 is not the allocated VF %s (%s, %s): %v", name, ids[0], vfNetdev, macs[vfNetdev], err)
			return nil
		}
		addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
		if len(addrs) != 1 || addrs[0].IP.String() != st[1].IPs[0] {
			t.Errorf("%s: net1 addresses %v, network-status says %v", name, addrs, st[1].IPs)
		}
		return nil
	})
	return ids[0], st[1].IPs[0]
}

// released checks that a deleted VF pod gave its VF back to the node under its own name (vf
// "": the VF is already in another pod) and its net1 address back to IPAM. The API may forget
// a pod a moment before the runtime's teardown (CNI DEL) has finished: what counts is that
// both come back, so it looks for 15 s.
func released(t *testing.T, c *clustertest.Cluster, who, vf, ip string, macs map[string]string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var problems []string
		if vf != "" {
			vfNetdev := "mne2ev" + vf[len(vf)-1:]
			if l, err := netlink.LinkByName(vfNetdev); err != nil || l.Attrs().HardwareAddr.String() != macs[vfNetdev] {
				problems = append(problems, fmt.Sprintf("VF %s not back on the node as %s: %v", vf, vfNetdev, err))
			}
		}
		for lease := range leaseOwners(c) {
			if filepath.Base(lease) == ip {
				problems = append(problems, fmt.Sprintf("net1 address %s still leased (%s)", ip, lease))
			}
		}
		if len(problems) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: %s", who, strings.Join(problems, "; "))
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// The install an operator does, end to end on the e2e cluster: make image imported into the
// node's containerd, kubectl apply -k (checked first with a server-side dry run), the agent
// installs the binaries and the conf, the device plugin's pool on the node, a VF pod through
// the installed agent; a rolling update to a new image while VF pods run; kubectl delete -k.
func TestInstall(t *testing.T) {
	c, tar := installCluster(t)
	_, macs := simSRIOVNode(t, c, 3)
	in := &installed{c: c, dir: t.TempDir()}
	ref := importImage(t, c, tar)
	dpConfig := `{"resourceList":[{"resourceName":"mn_sriov_net","selectors":{"pfNames":["mne2epf"]}}]}`
	in.writeKustomization(t, ref, dpConfig)

	// What kubectl kustomize renders, for every shape, is valid against this API server.
	for _, k := range []string{"../../deploy", "../../deploy/overlays/thin", "../../deploy/overlays/device-plugin-only", in.dir} {
		out := kubectl(t, c, "apply", "--dry-run=server", "-k", k)
		if !strings.Contains(out, "daemonset.apps/multinet created (server dry run)") {
			t.Errorf("kubectl apply --dry-run=server -k %s:\n%s", k, out)
		}
	}
	kubectl(t, c, "apply", "-k", in.dir)
	uninstalled := false
	t.Cleanup(func() {
		if !uninstalled {
			exec.Command(filepath.Join(c.Dir, "tools", "kubectl"), "--kubeconfig", filepath.Join(c.Dir, "kubeconfig"), "delete", "-k", in.dir, "--wait=false").Run()
		}
	})
	agent := in.waitRolledOut(t, ref)
	t.Logf("agent %s Ready with %s", agent.Name, ref)
	in.waitWebhook(t, ref)
	if t.Failed() {
		return
	}

	// The conf and the binaries are in place, the pool is on the node.
	conf, err := os.ReadFile(filepath.Join(c.CNIConfDir(), "00-multinet.conflist"))
	if err != nil || !strings.Contains(string(conf), `"multinet-shim"`) || !strings.Contains(string(conf), "10-bridge.conflist") {
		t.Fatalf("conf: %v\n%s", err, conf)
	}
	for _, b := range []string{"multinet", "multinet-shim", "sriov", "passthru", "vhostuser"} {
		fi, err := os.Stat(filepath.Join(c.CNIBinDir(), b))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o755 {
			t.Errorf("CNI binary %s: %v %v", b, fi, err)
		}
	}
	waitNodeRes(t, c, &plugin{log: "/dev/null"}, "installed agent's device plugin", sriovRes, 3, 3)
	c.CreateNAD(t, "default", "sriov-net", `{"cniVersion": "1.0.0", "type": "sriov", "ipam": {"type": "host-local",
	  "dataDir": "`+c.IPAMDir()+`", "subnet": "10.56.218.0/24"}}`, map[string]string{"k8s.v1.cni.cncf.io/resourceName": sriovRes})
	createVFPod(t, c, "keeps", false)
	createVFPod(t, c, "goes", false)
	keepsVF, keepsIP := attachedVF(t, c, "keeps", macs)
	goesVF, goesIP := attachedVF(t, c, "goes", macs)
	if t.Failed() {
		return
	}

	t.Run("RollingUpdate", func(t *testing.T) {
		// A new image (same binaries, another label: a new content tag), as a release would be.
		second := filepath.Join(t.TempDir(), "second.tar")
		mk := exec.Command("make", "--no-print-directory", "image", "IMAGE_LABELS=multinet.e2e/rollout="+fmt.Sprint(time.Now().Unix()), "IMAGE_TAR="+second)
		mk.Dir = "../.."
		if b, err := mk.CombinedOutput(); err != nil {
			t.Fatalf("make image: %v\n%s", err, b)
		}
		ref2 := importImage(t, c, second)
		if ref2 == ref {
			t.Fatalf("the new image has the old tag %s", ref)
		}
		in.writeKustomization(t, ref2, dpConfig)
		kubectl(t, c, "apply", "-k", in.dir)
		// While the agent is replaced: one pod deleted, one created.
		done := make(chan struct{})
		go func() { defer close(done); c.DeletePod(t, "default", "goes") }()
		createVFPod(t, c, "during", true)
		<-done
		newAgent := in.waitRolledOut(t, ref2)
		in.waitWebhook(t, ref2)
		if newAgent.UID == agent.UID {
			t.Fatalf("agent pod %s not replaced", agent.Name)
		}
		duringVF, _ := attachedVF(t, c, "during", macs)
		if duringVF == goesVF {
			// kubelet gave the VF the deleted pod freed to the pod created meanwhile, and
			// attachedVF found it there as net1 with its own MAC: it came back and went again.
			// Only the deleted pod's address is left to look for.
			released(t, c, "pod deleted during the update", "", goesIP, macs)
		} else {
			released(t, c, "pod deleted during the update", goesVF, goesIP, macs)
		}
		// The pod from before kept its interface through the update.
		if vf, ip := attachedVF(t, c, "keeps", macs); vf != keepsVF || ip != keepsIP {
			t.Errorf("pod keeps: VF %s %s before the update, %s %s after", keepsVF, keepsIP, vf, ip)
		}
		if duringVF == keepsVF {
			t.Errorf("two running pods on VF %s", duringVF)
		}
		c.DeletePod(t, "default", "keeps")
		released(t, c, "pod deleted after the update", keepsVF, keepsIP, macs)
		if b, err := os.ReadFile(filepath.Join(c.CNIConfDir(), "00-multinet.conflist")); err != nil || string(b) != string(conf) {
			t.Errorf("conf after the update: %v\n%s", err, b)
		}
	})

	t.Run("Uninstall", func(t *testing.T) {
		kubectl(t, c, "delete", "-k", in.dir, "--wait=true", "--timeout=2m")
		uninstalled = true
		deadline := time.Now().Add(90 * time.Second)
		for {
			pods, err := c.Kube.CoreV1().Pods("kube-system").List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=multinet"})
			if err == nil && len(pods.Items) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("agent pods left 90s after kubectl delete -k: %v %v", pods, err)
			}
			time.Sleep(time.Second)
		}
		// Nothing of ours in the conf dir: the node is back to its cluster network alone.
		ents, _ := os.ReadDir(c.CNIConfDir())
		var left []string
		for _, e := range ents {
			if e.Name() != "10-bridge.conflist" {
				left = append(left, e.Name())
			}
		}
		if len(left) > 0 {
			t.Errorf("conf dir %s still holds %v after the uninstall\n%s", c.CNIConfDir(), left, in.agentLog())
		}
		// A new plain pod runs on the cluster network alone; the pod of the install deletes.
		c.CreatePod(t, "default", "after-uninstall")
		p := c.WaitRunning(t, "default", "after-uninstall", 60*time.Second)
		if s, ok := p.Annotations["k8s.v1.cni.cncf.io/network-status"]; ok {
			t.Errorf("pod after the uninstall went through multinet: network-status %s", s)
		}
		clustertest.PodNetNS(t, "eth0", p.Status.PodIP).Do(func(ns.NetNS) error {
			links, _ := netlink.LinkList()
			for _, l := range links {
				if n := l.Attrs().Name; n != "lo" && n != "eth0" {
					t.Errorf("pod after the uninstall has %s", n)
				}
			}
			return nil
		})
		c.DeletePod(t, "default", "during")
		c.DeletePod(t, "default", "after-uninstall")

		// Nothing of ours in the API.
		dc, err := dynamic.NewForConfig(c.Config)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range []struct {
			gvr       schema.GroupVersionResource
			namespace string
			name      string
		}{
			{schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "daemonsets"}, "kube-system", "multinet"},
			{schema.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}, "kube-system", "multinetd"},
			{schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"}, "", "multinetd"},
			{schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"}, "", "multinetd"},
			{schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"}, "kube-system", "multinetd"},
			{schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, "kube-system", "multinet-deviceplugin"},
			{schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, "kube-system", "multinet-vf-policy"},
			{schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "validatingadmissionpolicies"}, "", "multinet-node-scope"},
			{schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}, "", "network-attachment-definitions.k8s.cni.cncf.io"},
			{schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "mutatingwebhookconfigurations"}, "", "multinet-webhook"},
			{schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}, "kube-system", "multinet-webhook"},
			{schema.GroupVersionResource{Version: "v1", Resource: "services"}, "kube-system", "multinet-webhook"},
			{schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, "kube-system", "multinet-webhook-tls"},
			{schema.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}, "kube-system", "multinet-webhook"},
		} {
			var err error
			if o.namespace != "" {
				_, err = dc.Resource(o.gvr).Namespace(o.namespace).Get(context.Background(), o.name, metav1.GetOptions{})
			} else {
				_, err = dc.Resource(o.gvr).Get(context.Background(), o.name, metav1.GetOptions{})
			}
			if !apierrors.IsNotFound(err) {
				t.Errorf("%s %s/%s after the uninstall: %v", o.gvr.Resource, o.namespace, o.name, err)
			}
		}
		cms, _ := c.Kube.CoreV1().ConfigMaps("kube-system").List(context.Background(), metav1.ListOptions{})
		for _, cm := range cms.Items {
			if strings.HasPrefix(cm.Name, "multinet-agent") {
				t.Errorf("ConfigMap %s left after the uninstall", cm.Name)
			}
		}
	})
}
