package agent

import (
	"testing"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	nadutils "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/utils"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The pod cache keeps what the meta-plugin reads and drops the rest (a node's pods with their
// specs, statuses and managedFields would cost many times more).
func TestTrimPodKeepsWhatMetaReads(t *testing.T) {
	in := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: "u1", ResourceVersion: "7",
			Annotations:   map[string]string{nadv1.NetworkAttachmentAnnot: "macvlan-conf"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec:   corev1.PodSpec{NodeName: "node1", Containers: []corev1.Container{{Name: "app", Image: "x"}}},
		Status: corev1.PodStatus{PodIP: "10.0.0.1"},
	}
	out, err := trimPod(in)
	if err != nil {
		t.Fatal(err)
	}
	p := out.(*corev1.Pod)
	if p.Name != "web" || p.Namespace != "default" || p.UID != "u1" || p.Annotations[nadv1.NetworkAttachmentAnnot] != "macvlan-conf" || p.Spec.NodeName != "node1" {
		t.Fatalf("trimmed away what meta reads: %+v", p)
	}
	if len(p.ManagedFields) != 0 || len(p.Spec.Containers) != 0 || p.Status.PodIP != "" {
		t.Fatalf("kept what meta never reads: %+v", p)
	}
}

// network-status as the agent writes it reads back with the NAD client, like the thin
// binary's.
func TestStatusAnnotationReadsBack(t *testing.T) {
	want := []nadv1.NetworkStatus{{Name: "cbr0", Interface: "eth0", IPs: []string{"10.244.0.5"}, Default: true},
		{Name: "default/macvlan-conf", Interface: "net1", IPs: []string{"10.10.0.2"}, Mac: "02:00:00:00:00:01"}}
	v, err := statusAnnotation(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := nadutils.GetNetworkStatus(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{nadv1.NetworkStatusAnnot: v}}})
	if err != nil || len(got) != 2 || got[1].Interface != "net1" || got[1].Mac != want[1].Mac || !got[0].Default {
		t.Fatalf("read back %+v, %v from %s", got, err, v)
	}
}
