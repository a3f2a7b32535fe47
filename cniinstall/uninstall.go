package cniinstall

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// owner is the DaemonSet that runs this agent's pod.
type owner struct{ namespace, name string }

func (o owner) String() string { return o.namespace + "/" + o.name }

// podOwner reads the pod's controlling DaemonSet from its ownerReferences; ok false when the
// pod has none (a static pod, an orphan): such a pod is never taken for an uninstall.
func podOwner(ctx context.Context, kube kubernetes.Interface, namespace, pod string) (o owner, ok bool, err error) {
	p, err := kube.CoreV1().Pods(namespace).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		return owner{}, false, fmt.Errorf("pod %s/%s: %w", namespace, pod, err)
	}
	for _, r := range p.OwnerReferences {
		if r.Kind == "DaemonSet" && r.Controller != nil && *r.Controller {
			return owner{namespace: namespace, name: r.Name}, true, nil
		}
	}
	return owner{}, false, nil
}

// daemonSetGone tells whether the DaemonSet is deleted or being deleted: then this pod stops
// for good (an uninstall); while it exists, a stop is a restart or a rolling update.
func daemonSetGone(ctx context.Context, kube kubernetes.Interface, o owner) (bool, string, error) {
	ds, err := kube.AppsV1().DaemonSets(o.namespace).Get(ctx, o.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return true, "DaemonSet " + o.String() + " is deleted", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("DaemonSet %s: %w", o, err)
	}
	if ds.DeletionTimestamp != nil {
		return true, "DaemonSet " + o.String() + " is being deleted", nil
	}
	return false, "DaemonSet " + o.String() + " exists", nil
}
