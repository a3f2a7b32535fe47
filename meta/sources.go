package meta

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	nadclient "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/clientset/versioned"
	nadutils "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/utils"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/yaml"

	"github.com/multinet-io/multinet/internal/cniargs"
	"github.com/multinet-io/multinet/internal/fsutil"
)

// ErrNADNotFound is returned (wrapped) when a selected network has no NAD.
var ErrNADNotFound = errors.New("network-attachment-definition not found")

// Networks is where NADs and pods come from: the API server, or a folder of manifests in
// standalone mode. It is the seam between the meta-plugin and the cluster.
type Networks interface {
	NAD(ctx context.Context, namespace, name string) (*nadv1.NetworkAttachmentDefinition, error)
	// Pod returns the pod's metadata; standalone mode builds it from CNI_ARGS.
	Pod(ctx context.Context, namespace, name string) (*corev1.Pod, error)
	// SetStatus records the pod's network-status.
	SetStatus(ctx context.Context, pod *corev1.Pod, containerID string, statuses []nadv1.NetworkStatus) error
	ClearStatus(containerID string)
}

// CachedNetworks is a Networks whose Pod answers from a cache (the node agent's informer):
// LivePod asks the API server, for when the cached pod is not the runtime's.
type CachedNetworks interface {
	Networks
	LivePod(ctx context.Context, namespace, name string) (*corev1.Pod, error)
}

// apiNetworks reads NADs and pods through the API server.
type apiNetworks struct {
	kube kubernetes.Interface
	nads nadclient.Interface
}

func newAPINetworks(kubeconfig string) (*apiNetworks, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	rc.Timeout = 10 * time.Second
	rc.UserAgent = "multinet"
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	nads, err := nadclient.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	return &apiNetworks{kube: kube, nads: nads}, nil
}

// apiBackoff rides out an API server restart or a brief overload, which would otherwise turn
// into a pod without its secondary interfaces.
var apiBackoff = wait.Backoff{Steps: 5, Duration: 200 * time.Millisecond, Factor: 2, Jitter: 0.1}

func transient(err error) bool {
	return err != nil && !apierrors.IsNotFound(err) && !apierrors.IsForbidden(err) &&
		!apierrors.IsUnauthorized(err) && !apierrors.IsBadRequest(err) && !apierrors.IsInvalid(err)
}

func (a *apiNetworks) NAD(ctx context.Context, namespace, name string) (*nadv1.NetworkAttachmentDefinition, error) {
	var nad *nadv1.NetworkAttachmentDefinition
	err := retry.OnError(apiBackoff, transient, func() (err error) {
		nad, err = a.nads.K8sCniCncfIoV1().NetworkAttachmentDefinitions(namespace).Get(ctx, name, metav1.GetOptions{})
		return err
	})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%w: %s/%s", ErrNADNotFound, namespace, name)
	}
	if err != nil {
		return nil, fmt.Errorf("get network-attachment-definition %s/%s: %w", namespace, name, err)
	}
	return nad, nil
}

func (a *apiNetworks) Pod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	var pod *corev1.Pod
	err := retry.OnError(apiBackoff, transient, func() (err error) {
		pod, err = a.kube.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("get pod %s/%s: %w", namespace, name, err)
	}
	return pod, nil
}

func (a *apiNetworks) SetStatus(ctx context.Context, pod *corev1.Pod, _ string, statuses []nadv1.NetworkStatus) error {
	// The NAD client's helper re-reads the pod and retries on conflicts with other writers.
	return retry.OnError(apiBackoff, transient, func() error {
		return nadutils.SetNetworkStatus(a.kube, pod.DeepCopy(), statuses)
	})
}

func (a *apiNetworks) ClearStatus(string) {}

// dirNetworks is standalone mode: NAD manifests (YAML or JSON, several per file with ---) in a
// folder, the pod described by CNI_ARGS, network-status written to a file per container.
type dirNetworks struct {
	dir       string
	statusDir string
	args      map[string]string
}

// Standalone-mode CNI_ARGS.
const (
	ArgNetworks       = "MULTINET_NETWORKS"
	ArgDefaultNetwork = "MULTINET_DEFAULT_NETWORK"
)

func (d *dirNetworks) load() ([]nadv1.NetworkAttachmentDefinition, error) {
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, fmt.Errorf("networkDir: %w", err)
	}
	var nads []nadv1.NetworkAttachmentDefinition
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
			continue
		}
		path := filepath.Join(d.dir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("networkDir: %w", err)
		}
		docs, err := splitManifests(b)
		if err != nil {
			return nil, fmt.Errorf("networkDir: %s: %w", path, err)
		}
		for i, doc := range docs {
			var nad nadv1.NetworkAttachmentDefinition
			if err := yaml.UnmarshalStrict(doc, &nad); err != nil {
				return nil, fmt.Errorf("networkDir: %s document %d: %w", path, i+1, err)
			}
			if nad.Kind != "NetworkAttachmentDefinition" {
				continue
			}
			if nad.Namespace == "" {
				nad.Namespace = "default"
			}
			nads = append(nads, nad)
		}
	}
	return nads, nil
}

func splitManifests(b []byte) ([][]byte, error) {
	var docs [][]byte
	for _, part := range bytes.Split(append([]byte("\n"), b...), []byte("\n---")) {
		if len(bytes.TrimSpace(part)) > 0 {
			docs = append(docs, part)
		}
	}
	return docs, nil
}

func (d *dirNetworks) NAD(_ context.Context, namespace, name string) (*nadv1.NetworkAttachmentDefinition, error) {
	nads, err := d.load()
	if err != nil {
		return nil, err
	}
	for i := range nads {
		if nads[i].Namespace == namespace && nads[i].Name == name {
			return &nads[i], nil
		}
	}
	return nil, fmt.Errorf("%w: %s/%s (in %s)", ErrNADNotFound, namespace, name, d.dir)
}

func (d *dirNetworks) Pod(_ context.Context, namespace, name string) (*corev1.Pod, error) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Annotations: map[string]string{}}}
	if v := d.args[ArgNetworks]; v != "" {
		pod.Annotations[NetworksAnnot] = v
	}
	if v := d.args[ArgDefaultNetwork]; v != "" {
		pod.Annotations[DefaultNetworkAnnot] = v
	}
	return pod, nil
}

func (d *dirNetworks) statusPath(containerID string) string {
	return filepath.Join(d.statusDir, containerID+".json")
}

func (d *dirNetworks) SetStatus(_ context.Context, _ *corev1.Pod, containerID string, statuses []nadv1.NetworkStatus) error {
	b, err := marshalStatus(statuses)
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(d.statusPath(containerID), b, 0o600)
}

func (d *dirNetworks) ClearStatus(containerID string) { fsutil.Remove(d.statusPath(containerID)) }

// parseCNIArgs splits CNI_ARGS ("K=V;K=V"); values may contain '=' and ',' (the annotation
// syntax does), so only the first '=' separates.
func parseCNIArgs(s string) map[string]string { return cniargs.Parse(s) }

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
