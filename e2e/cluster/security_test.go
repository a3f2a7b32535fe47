//go:build e2e_cluster

package cluster

import (
	"context"
	"strings"
	"testing"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/multinet-io/multinet/e2e/cluster/clustertest"
)

// multinetClient is the node plugin's own identity, from the kubeconfig cluster-up wrote with a
// token bound to this node.
func multinetClient(t *testing.T, c *clustertest.Cluster) (*kubernetes.Clientset, *rest.Config) {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", c.MultinetKubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs, cfg
}

// writeStatus does what the plugin does (get, change, update pods/status) with one extra change
// applied by mutate, and returns the API server's answer.
func writeStatus(cs kubernetes.Interface, namespace, name string, mutate func(*corev1.Pod)) error {
	p, err := cs.CoreV1().Pods(namespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if p.Annotations == nil {
		p.Annotations = map[string]string{}
	}
	p.Annotations[nadv1.NetworkStatusAnnot] = `[{"name":"scope-test","interface":"eth0"}]`
	mutate(p)
	_, err = cs.CoreV1().Pods(namespace).UpdateStatus(context.Background(), p, metav1.UpdateOptions{})
	return err
}

// Item 16 of the security review: the plugin's credentials could update pods/status of every
// pod in the cluster. deploy/rbac/multinet-node-scope.yaml narrows them to the pods of the node
// the token is bound to, and to the network-status annotation.
func TestSecurityNodeScopedStatusWrites(t *testing.T) {
	c := clustertest.Connect(t)
	sa, cfg := multinetClient(t, c)
	ctx := context.Background()

	c.CreatePod(t, "default", "scope-mine")
	c.WaitRunning(t, "default", "scope-mine", 90*time.Second)
	// A pod of another node: no kubelet runs there, so nothing but this test touches it.
	zero := int64(0)
	other := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "scope-other", Namespace: "default"},
		Spec:       corev1.PodSpec{NodeName: "node2", Containers: []corev1.Container{{Name: "app", Image: clustertest.Image}}},
	}
	if _, err := c.Kube.CoreV1().Pods("default").Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Kube.CoreV1().Pods("default").Delete(context.Background(), "scope-other", metav1.DeleteOptions{GracePeriodSeconds: &zero})
	})

	same := func(*corev1.Pod) {}
	if err := writeStatus(sa, "default", "scope-mine", same); err != nil {
		t.Fatalf("network-status of a pod on its own node: %v (the plugin needs this)", err)
	}
	denied := func(what string, err error, want string) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: allowed", what)
		} else if !strings.Contains(err.Error(), want) {
			t.Errorf("%s: denied with %q, want it to say %q", what, err, want)
		}
	}
	denied("network-status of a pod on another node", writeStatus(sa, "default", "scope-other", same), `may not write pod default/scope-other of node "node2"`)
	denied("another annotation", writeStatus(sa, "default", "scope-mine", func(p *corev1.Pod) { p.Annotations["x"] = "y" }), "only the network-status annotation")
	denied("a label", writeStatus(sa, "default", "scope-mine", func(p *corev1.Pod) {
		if p.Labels == nil {
			p.Labels = map[string]string{}
		}
		p.Labels["app"] = "fake"
	}), "status fields or labels")
	denied("the pod's IP", writeStatus(sa, "default", "scope-mine", func(p *corev1.Pod) { p.Status.PodIP = "10.244.0.250" }), "status fields or labels")

	// A token of the same account that is bound to no node (a long-lived or leaked one).
	secs := int64(600)
	tr, err := c.Kube.CoreV1().ServiceAccounts("kube-system").CreateToken(ctx, "multinet",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &secs}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	unbound := rest.AnonymousClientConfig(cfg)
	unbound.BearerToken = tr.Status.Token
	ucs, err := kubernetes.NewForConfig(unbound)
	if err != nil {
		t.Fatal(err)
	}
	denied("an unbound token", writeStatus(ucs, "default", "scope-mine", same), "bound to a node")
}
