// Package nodeevents reports a node agent's findings as Kubernetes Events on the Node, where
// `kubectl describe node` shows them. The device plugin uses it for the pools of its config it
// refuses to serve: the operator sees why a resource is missing without reading the log.
package nodeevents

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// Event reasons.
const (
	ReasonPoolRefused = "PoolRefused"
	ReasonPoolsServed = "PoolsServed"
)

// Recorder writes events about one node.
type Recorder struct {
	Kube      kubernetes.Interface
	Node      string
	Component string // the event's source, e.g. multinet-deviceplugin
}

// Warning records a Warning event on the node.
func (r *Recorder) Warning(ctx context.Context, reason, message string) error {
	return r.emit(ctx, corev1.EventTypeWarning, reason, message)
}

// Normal records a Normal event on the node.
func (r *Recorder) Normal(ctx context.Context, reason, message string) error {
	return r.emit(ctx, corev1.EventTypeNormal, reason, message)
}

func (r *Recorder) emit(ctx context.Context, typ, reason, message string) error {
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: r.Node + ".", Namespace: metav1.NamespaceDefault},
		// As kubelet refers to its node (and kubectl describe node looks it up): the UID is the
		// node's name, the namespace empty.
		InvolvedObject:      corev1.ObjectReference{Kind: "Node", Name: r.Node, UID: types.UID(r.Node), APIVersion: "v1"},
		Reason:              reason,
		Message:             message,
		Type:                typ,
		Source:              corev1.EventSource{Component: r.Component, Host: r.Node},
		FirstTimestamp:      now,
		LastTimestamp:       now,
		Count:               1,
		ReportingController: "multinet.io/" + r.Component,
		ReportingInstance:   r.Component + "-" + r.Node,
	}
	if _, err := r.Kube.CoreV1().Events(metav1.NamespaceDefault).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("event %s on node %s: %w", reason, r.Node, err)
	}
	return nil
}
