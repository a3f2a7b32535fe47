package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	nadclient "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/clientset/versioned"
	nadinformers "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/informers/externalversions/k8s.cni.cncf.io/v1"
	nadlisters "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/listers/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ktypes "k8s.io/apimachinery/pkg/types"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/multinet-io/multinet/meta"
)

// informerNets is meta.Networks from the agent's caches: pods of this node only, every NAD.
// A pod or NAD the cache does not have yet (created a moment ago) costs one bounded live GET.
type informerNets struct {
	kube       kubernetes.Interface
	nadc       nadclient.Interface
	pods       corelisters.PodLister
	nads       nadlisters.NetworkAttachmentDefinitionLister
	getTimeout time.Duration
	synced     []cache.InformerSynced
}

// newInformerNets sets up the informers; start them with the returned func (see Run). They are
// built from the core/v1 and NAD informer packages directly, not the shared factories: those
// import every API group's informers and listers, which the agent would carry (binary pages
// resident in its RSS, package init at every start) for two resources.
func newInformerNets(kube kubernetes.Interface, nadc nadclient.Interface, node string, getTimeout time.Duration) (*informerNets, func(stop <-chan struct{})) {
	byNS := cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}
	pi := coreinformers.NewFilteredPodInformer(kube, metav1.NamespaceAll, 0, byNS,
		func(o *metav1.ListOptions) { o.FieldSelector = "spec.nodeName=" + node })
	ni := nadinformers.NewNetworkAttachmentDefinitionInformer(nadc, metav1.NamespaceAll, 0, byNS)
	_ = pi.SetTransform(trimPod) // only fails once started
	_ = ni.SetTransform(trimNAD)
	n := &informerNets{kube: kube, nadc: nadc, pods: corelisters.NewPodLister(pi.GetIndexer()),
		nads: nadlisters.NewNetworkAttachmentDefinitionLister(ni.GetIndexer()), getTimeout: getTimeout,
		synced: []cache.InformerSynced{pi.HasSynced, ni.HasSynced}}
	return n, func(stop <-chan struct{}) { go pi.Run(stop); go ni.Run(stop) }
}

func (n *informerNets) hasSynced() bool {
	for _, s := range n.synced {
		if !s() {
			return false
		}
	}
	return true
}

// trimPod keeps what the meta-plugin reads (name, namespace, UID, annotations, node): a node's
// pods carry specs and statuses many times that size, and managedFields often as much again.
func trimPod(obj interface{}) (interface{}, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	return &corev1.Pod{
		TypeMeta: p.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID,
			ResourceVersion: p.ResourceVersion, Annotations: p.Annotations, Labels: p.Labels, DeletionTimestamp: p.DeletionTimestamp},
		Spec: corev1.PodSpec{NodeName: p.Spec.NodeName},
	}, nil
}

func trimNAD(obj interface{}) (interface{}, error) {
	if n, ok := obj.(*nadv1.NetworkAttachmentDefinition); ok {
		n.ManagedFields = nil
	}
	return obj, nil
}

func (n *informerNets) NAD(ctx context.Context, namespace, name string) (*nadv1.NetworkAttachmentDefinition, error) {
	nad, err := n.nads.NetworkAttachmentDefinitions(namespace).Get(name)
	if err == nil {
		return nad.DeepCopy(), nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("network-attachment-definition %s/%s: %w", namespace, name, err)
	}
	// Created a moment before the pod: the watch may not have brought it yet.
	ctx, cancel := context.WithTimeout(ctx, n.getTimeout)
	defer cancel()
	nad, err = n.nadc.K8sCniCncfIoV1().NetworkAttachmentDefinitions(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%w: %s/%s", meta.ErrNADNotFound, namespace, name)
	}
	if err != nil {
		return nil, fmt.Errorf("get network-attachment-definition %s/%s: %w", namespace, name, err)
	}
	return nad, nil
}

func (n *informerNets) Pod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	if pod, err := n.pods.Pods(namespace).Get(name); err == nil {
		return pod.DeepCopy(), nil
	}
	// The kubelet runs a pod's sandbox as soon as it sees it, often before our watch does.
	return n.LivePod(ctx, namespace, name)
}

// LivePod is one bounded GET of the pod (meta.CachedNetworks).
func (n *informerNets) LivePod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, n.getTimeout)
	defer cancel()
	pod, err := n.kube.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get pod %s/%s: %w", namespace, name, err)
	}
	return pod, nil
}

// SetStatus writes network-status with one merge patch of the pod's status subresource (the
// node's RBAC grants pods/status). The UID in the patch makes the API server refuse it for a
// pod of the same name that replaced ours.
func (n *informerNets) SetStatus(ctx context.Context, pod *corev1.Pod, _ string, statuses []nadv1.NetworkStatus) error {
	val, err := statusAnnotation(statuses)
	if err != nil {
		return err
	}
	md := map[string]interface{}{"annotations": map[string]string{nadv1.NetworkStatusAnnot: val}}
	if pod.UID != "" {
		md["uid"] = pod.UID
	}
	patch, err := json.Marshal(map[string]interface{}{"metadata": md})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, n.getTimeout)
	defer cancel()
	if _, err := n.kube.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, ktypes.MergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		return fmt.Errorf("pod %s/%s: patch %s: %w", pod.Namespace, pod.Name, nadv1.NetworkStatusAnnot, err)
	}
	return nil
}

// statusAnnotation formats network-status as the NAD client's SetNetworkStatus does.
func statusAnnotation(statuses []nadv1.NetworkStatus) (string, error) {
	parts := make([]string, 0, len(statuses))
	for _, st := range statuses {
		b, err := json.MarshalIndent(st, "", "    ")
		if err != nil {
			return "", err
		}
		parts = append(parts, string(b))
	}
	return "[" + strings.Join(parts, ",") + "]", nil
}

func (n *informerNets) ClearStatus(string) {}

var _ meta.CachedNetworks = (*informerNets)(nil)
