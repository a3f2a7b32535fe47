package meta

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

const tenantNADs = `apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: secret-net
  namespace: tenant-b
spec:
  config: '{"cniVersion":"1.0.0","name":"secret-net","type":"bridge"}'
---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: alt-cluster
  namespace: kube-system
spec:
  config: '{"cniVersion":"1.0.0","name":"alt-cluster","type":"bridge"}'
---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: own-cluster
  namespace: tenant-a
spec:
  config: '{"cniVersion":"1.0.0","name":"own-cluster","type":"bridge"}'
`

// namespaceIsolation is a tenant boundary: the default-network annotation, which puts a NAD on
// the pod's eth0, must not cross it either. The pod's own namespace, the global namespaces and
// the plugin's namespace (where cluster networks live) stay allowed.
func TestNamespaceIsolationCoversDefaultNetwork(t *testing.T) {
	conf, nets := standalone(t, map[string]string{"nads": tenantNADs})
	conf.NamespaceIsolation = true
	pl := &planner{conf: conf, nets: nets}
	pod := podWith("")
	pod.Namespace = "tenant-a"

	pod.Annotations[DefaultNetworkAnnot] = "tenant-b/secret-net"
	_, err := pl.plan(context.Background(), pod, "uid-1", "eth0")
	if err == nil || !strings.Contains(err.Error(), "tenant-b/secret-net") || !strings.Contains(err.Error(), "namespaceIsolation") {
		t.Errorf("default-network from another tenant's namespace: err = %v, want a namespaceIsolation refusal naming it", err)
	}
	for _, ok := range []string{"alt-cluster", "kube-system/alt-cluster", "tenant-a/own-cluster"} {
		pod.Annotations[DefaultNetworkAnnot] = ok
		ds, err := pl.plan(context.Background(), pod, "uid-1", "eth0")
		if err != nil || len(ds) != 1 {
			t.Errorf("default-network %s: %v", ok, err)
		}
	}
}

// One rule for both ways a pod names a NAD: a network the pod may put on net1 it may put on
// eth0; eth0 may in addition come from the plugin's namespace.
func TestNamespaceIsolationOneRule(t *testing.T) {
	conf := &Config{NamespaceIsolation: true, MultinetNamespace: "kube-system", GlobalNamespaces: []string{"shared"}}
	pod := &corev1.Pod{}
	pod.Namespace, pod.Name = "tenant-a", "p"
	for _, tc := range []struct {
		ns                 string
		secondary, cluster bool // allowed as net1, as eth0
	}{{"tenant-a", true, true}, {"shared", true, true}, {"kube-system", false, true}, {"tenant-b", false, false}} {
		if got := conf.checkIsolation(pod, tc.ns, "n", false) == nil; got != tc.secondary {
			t.Errorf("%s as a secondary network: allowed %v, want %v", tc.ns, got, tc.secondary)
		}
		if got := conf.checkIsolation(pod, tc.ns, "n", true) == nil; got != tc.cluster {
			t.Errorf("%s as eth0: allowed %v, want %v", tc.ns, got, tc.cluster)
		}
	}
	conf.NamespaceIsolation = false
	if err := conf.checkIsolation(pod, "tenant-b", "n", false); err != nil {
		t.Errorf("isolation off: %v", err)
	}
}
