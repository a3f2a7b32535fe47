package meta

import (
	"context"
	"strings"
	"testing"
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
