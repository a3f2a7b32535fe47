package webhook

import (
	"encoding/json"
	"errors"
	"testing"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/multinet-io/multinet/meta"
)

// mapNADs is an in-memory NADGetter for the fuzzer (no informer: millions of calls).
type mapNADs map[string]*nadv1.NetworkAttachmentDefinition

func (m mapNADs) Get(ns, name string) (*nadv1.NetworkAttachmentDefinition, error) {
	if n, ok := m[ns+"/"+name]; ok {
		return n, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Group: "k8s.cni.cncf.io", Resource: "network-attachment-definitions"}, name)
}

// FuzzMutate feeds the networks annotation, a user-set limit and the honor switch to the
// annotation -> patch path. Whatever the input: no panic; either a denial with a message, or a
// patch that applies to the pod and leaves the first container with equal requests and limits
// of each resource: one per entry naming a NAD with that resource (or the user's own value).
func FuzzMutate(f *testing.F) {
	f.Add("sriov-a", int64(0), false)
	f.Add("sriov-a,sriov-a2@x,other/sriov-b", int64(1), true)
	f.Add(`[{"name":"sriov-a"},{"name":"sriov-b","namespace":"other"}]`, int64(2), false)
	f.Add("plain", int64(0), false)
	nads := mapNADs{}
	for _, n := range testNADs() {
		nads[n.Namespace+"/"+n.Name] = n
	}
	f.Fuzz(func(t *testing.T, networks string, userLimit int64, honor bool) {
		pod := testPod(networks)
		if userLimit > 0 && userLimit < 1000 {
			pod.Spec.Containers[0].Resources.Limits = corev1.ResourceList{resA: *resource.NewQuantity(userLimit, resource.DecimalSI)}
			pod.Spec.Containers[0].Resources.Requests = corev1.ResourceList{resA: *resource.NewQuantity(userLimit, resource.DecimalSI)}
		}
		m := &Mutator{NADs: nads, HonorResources: honor, DownwardAPI: true}
		patch, err := m.Mutate(pod, "default")
		var d *DeniedError
		if err != nil {
			if !errors.As(err, &d) || d.Error() == "" {
				t.Fatalf("%q: error %v is not a denial with a message", networks, err)
			}
			return
		}
		want := map[corev1.ResourceName]int64{}
		sels, perr := meta.ParseSelection(networks, "default")
		if perr != nil {
			t.Fatalf("%q: admitted, but the meta-plugin refuses it: %v", networks, perr)
		}
		for _, s := range sels {
			if r := nads[s.Namespace+"/"+s.Name].Annotations[meta.ResourceNameAnnot]; r != "" {
				want[corev1.ResourceName(r)]++
			}
		}
		if userLimit > 0 && userLimit < 1000 {
			if honor && want[resA] > 0 {
				want[resA] += userLimit
			} else {
				want[resA] = userLimit
			}
		}
		raw, _ := json.Marshal(patch)
		got := applyPatch(t, pod, raw).Spec.Containers[0].Resources
		for res, n := range want {
			r, l := got.Requests[res], got.Limits[res]
			if r.Value() != n || l.Value() != n {
				t.Fatalf("%q (user %d, honor %v): %s requests %s limits %s, want %d", networks, userLimit, honor, res, r.String(), l.String(), n)
			}
		}
		if len(got.Limits) != len(want) || len(got.Requests) != len(want) {
			t.Fatalf("%q: resources %v / %v, want exactly %v", networks, got.Requests, got.Limits, want)
		}
	})
}
