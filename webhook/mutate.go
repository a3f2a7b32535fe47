// Package webhook is the mutating admission webhook that does what network-resources-injector
// does for Multus users: for each network a pod names, it reads the NAD's resourceName
// annotation and adds that device-plugin resource to the pod's first container, and it mounts the
// pod's annotations and labels at /etc/podnetinfo so the app finds its network-status.
package webhook

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/multinet-io/multinet/meta"
)

// Names that are wire formats of network-resources-injector: pods and apps written for it read
// these paths and files.
const (
	PodNetInfoVolume = "podnetinfo"
	PodNetInfoPath   = "/etc/podnetinfo"
	AnnotationsFile  = "annotations"
	LabelsFile       = "labels"
	// ContainerNameEnv tells a container which hugepages_* files are its own.
	ContainerNameEnv = "CONTAINER_NAME"
)

var hugepagesResource = regexp.MustCompile(`^hugepages-(.+)$`)

// NADGetter returns a NAD, or an error for which IsNotFound is true when there is none.
type NADGetter interface {
	Get(namespace, name string) (*nadv1.NetworkAttachmentDefinition, error)
}

// Mutator computes the patch for a pod. Its switches are network-resources-injector's.
type Mutator struct {
	NADs NADGetter
	// ResourceNameKeys are the NAD annotations naming a resource (upstream
	// --network-resource-name-keys; default k8s.v1.cni.cncf.io/resourceName).
	ResourceNameKeys []string
	// HonorResources adds to what the first container already requests (upstream
	// --honor-resources); without it a resource the user already set on any container is left as
	// the user wrote it.
	HonorResources bool
	// DownwardAPI mounts the podnetinfo volume when resources are injected.
	DownwardAPI bool
	// HugepagesDownwardAPI also publishes each container's hugepages requests and limits (upstream
	// --injectHugepageDownApi).
	HugepagesDownwardAPI bool
}

// PatchOp is one RFC 6902 operation.
type PatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// DeniedError is a reason to refuse the pod, meant for its author.
type DeniedError struct{ msg string }

func (e *DeniedError) Error() string { return e.msg }

func denied(format string, args ...any) error { return &DeniedError{fmt.Sprintf(format, args...)} }

// Mutate returns the patch for pod, created in namespace (the admission request's: a pod made by
// a controller has no namespace in its body yet). A nil patch means nothing to change.
func (m *Mutator) Mutate(pod *corev1.Pod, namespace string) ([]PatchOp, error) {
	refs, err := networkRefs(pod, namespace)
	if err != nil || len(refs) == 0 {
		return nil, err
	}
	keys := m.ResourceNameKeys
	if len(keys) == 0 {
		keys = []string{meta.ResourceNameAnnot}
	}
	counts := map[corev1.ResourceName]int64{}
	selector := map[string]string{}
	selectorFrom := map[string]string{} // label -> the NAD that asked for it
	for _, r := range refs {
		nad, err := m.NADs.Get(r.namespace, r.name)
		if IsNotFound(err) {
			return nil, denied("network %s/%s named in %s: no such NetworkAttachmentDefinition", r.namespace, r.name, r.annotation)
		}
		if err != nil {
			return nil, fmt.Errorf("network %s/%s: %w", r.namespace, r.name, err)
		}
		for _, k := range keys {
			if res := strings.TrimSpace(nad.Annotations[k]); res != "" {
				// Refused here, naming the NAD, rather than by pod validation naming nothing.
				if errs := validation.IsQualifiedName(res); len(errs) > 0 || !strings.Contains(res, "/") {
					return nil, denied("NetworkAttachmentDefinition %s/%s: %s %q is not an extended resource name (domain/name)", r.namespace, r.name, k, res)
				}
				counts[corev1.ResourceName(res)]++
			}
		}
		if v, ok := nad.Annotations[NodeSelectorAnnot]; ok {
			if err := addNodeSelector(selector, selectorFrom, pod.Spec.NodeSelector, r.namespace+"/"+r.name, v); err != nil {
				return nil, err
			}
		}
	}
	var patch []PatchOp
	if len(selector) > 0 {
		merged := map[string]string{}
		for k, v := range pod.Spec.NodeSelector {
			merged[k] = v
		}
		for k, v := range selector {
			merged[k] = v
		}
		patch = append(patch, PatchOp{Op: "add", Path: "/spec/nodeSelector", Value: merged})
	}
	if len(counts) == 0 {
		return patch, nil
	}
	if len(pod.Spec.Containers) == 0 {
		return nil, denied("pod has no containers to give the network resources %v to", sortedNames(counts))
	}
	patch = append(patch, m.resourcePatch(pod, counts)...)
	if m.HugepagesDownwardAPI {
		patch = append(patch, hugepagesEnvPatch(pod)...)
	}
	if m.DownwardAPI {
		patch = append(patch, m.volumePatch(pod)...)
	}
	return patch, nil
}

// NodeSelectorAnnot on a NAD (upstream's) puts its pods on nodes with that label: "key=value",
// or "key" for an empty value.
const NodeSelectorAnnot = "k8s.v1.cni.cncf.io/nodeSelector"

// addNodeSelector adds a NAD's node label to selector. Upstream lets the NAD overwrite what the
// pod or another NAD asked for; here a contradiction denies the pod, naming both sides, since no
// node could satisfy both.
func addNodeSelector(selector, from, podSelector map[string]string, nad, annot string) error {
	parts := strings.Split(annot, "=")
	if len(parts) > 2 {
		return denied("NetworkAttachmentDefinition %s: %s %q has more than one label (want key=value)", nad, NodeSelectorAnnot, annot)
	}
	k, v := strings.TrimSpace(parts[0]), ""
	if len(parts) == 2 {
		v = strings.TrimSpace(parts[1])
	}
	if k == "" {
		return denied("NetworkAttachmentDefinition %s: %s %q has no label key", nad, NodeSelectorAnnot, annot)
	}
	if have, ok := podSelector[k]; ok && have != v {
		return denied("NetworkAttachmentDefinition %s needs nodes with %s=%s, but the pod's nodeSelector says %s=%s", nad, k, v, k, have)
	}
	if have, ok := selector[k]; ok && have != v {
		return denied("NetworkAttachmentDefinition %s needs nodes with %s=%s, but %s needs %s=%s", nad, k, v, from[k], k, have)
	}
	selector[k], from[k] = v, nad
	return nil
}

type networkRef struct{ annotation, namespace, name string }

// networkRefs lists the NADs a pod names, with the parsers the meta-plugin itself uses, so the
// webhook refuses exactly what CNI ADD would refuse later, only earlier and with a clearer error.
func networkRefs(pod *corev1.Pod, namespace string) ([]networkRef, error) {
	var refs []networkRef
	if v, ok := pod.Annotations[meta.DefaultNetworkAnnot]; ok && strings.TrimSpace(v) != "" {
		ns, name, err := meta.ParseNetworkRef(v, namespace)
		if err != nil {
			return nil, denied("annotation %s: %v", meta.DefaultNetworkAnnot, err)
		}
		refs = append(refs, networkRef{meta.DefaultNetworkAnnot, ns, name})
	}
	sels, err := meta.ParseSelection(pod.Annotations[meta.NetworksAnnot], namespace)
	if err != nil {
		return nil, denied("%v", err)
	}
	for _, s := range sels {
		refs = append(refs, networkRef{meta.NetworksAnnot, s.Namespace, s.Name})
	}
	return refs, nil
}

func sortedNames(counts map[corev1.ResourceName]int64) []string {
	var names []string
	for n := range counts {
		names = append(names, string(n))
	}
	sort.Strings(names)
	return names
}

// resourcePatch adds counts to the first container. As upstream does, a resource the user already
// set on any container is the user's choice and left alone, unless HonorResources asks to add
// ours on top. Requests and limits of an extended resource must be equal, so both get the same
// value (upstream sums requests and limits separately, and a request without a limit then fails
// validation).
func (m *Mutator) resourcePatch(pod *corev1.Pod, counts map[corev1.ResourceName]int64) []PatchOp {
	c := pod.Spec.Containers[0]
	var add []PatchOp
	for _, name := range sortedNames(counts) {
		res := corev1.ResourceName(name)
		q := *resource.NewQuantity(counts[res], resource.DecimalSI)
		if m.HonorResources {
			if have, ok := c.Resources.Limits[res]; ok {
				q.Add(have)
			} else if have, ok := c.Resources.Requests[res]; ok {
				q.Add(have)
			}
		} else if userSet(pod, res) {
			continue
		}
		key := escapePointer(name)
		add = append(add,
			PatchOp{Op: "add", Path: "/spec/containers/0/resources/requests/" + key, Value: q.String()},
			PatchOp{Op: "add", Path: "/spec/containers/0/resources/limits/" + key, Value: q.String()})
	}
	if len(add) == 0 {
		return nil // every resource was set by the user
	}
	// JSON patch cannot add into a map that is not there.
	var patch []PatchOp
	if len(c.Resources.Requests) == 0 {
		patch = append(patch, PatchOp{Op: "add", Path: "/spec/containers/0/resources/requests", Value: map[string]string{}})
	}
	if len(c.Resources.Limits) == 0 {
		patch = append(patch, PatchOp{Op: "add", Path: "/spec/containers/0/resources/limits", Value: map[string]string{}})
	}
	return append(patch, add...)
}

func userSet(pod *corev1.Pod, res corev1.ResourceName) bool {
	for _, c := range pod.Spec.Containers {
		if _, ok := c.Resources.Limits[res]; ok {
			return true
		}
		if _, ok := c.Resources.Requests[res]; ok {
			return true
		}
	}
	return false
}

// escapePointer escapes a map key for a JSON pointer (RFC 6901): intel.com/x -> intel.com~1x.
func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// volumePatch adds the podnetinfo downward-API volume and mounts it read-only in every container
// (as upstream does), unless the pod already has a volume or mount of that name.
func (m *Mutator) volumePatch(pod *corev1.Pod) []PatchOp {
	var patch []PatchOp
	for i, c := range pod.Spec.Containers {
		if slices.ContainsFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool {
			return vm.Name == PodNetInfoVolume || vm.MountPath == PodNetInfoPath
		}) {
			continue
		}
		base := "/spec/containers/" + strconv.Itoa(i) + "/volumeMounts"
		if len(c.VolumeMounts) == 0 {
			patch = append(patch, PatchOp{Op: "add", Path: base, Value: []corev1.VolumeMount{}})
		}
		patch = append(patch, PatchOp{Op: "add", Path: base + "/-",
			Value: corev1.VolumeMount{Name: PodNetInfoVolume, MountPath: PodNetInfoPath, ReadOnly: true}})
	}
	if slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == PodNetInfoVolume }) {
		return patch
	}
	// Both files always: an app reading labels must not fail because the pod had none at
	// admission (upstream leaves out a file whose map was empty).
	items := []corev1.DownwardAPIVolumeFile{
		{Path: LabelsFile, FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
		{Path: AnnotationsFile, FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations"}},
	}
	if m.HugepagesDownwardAPI {
		items = append(items, hugepagesItems(pod)...)
	}
	if len(pod.Spec.Volumes) == 0 {
		patch = append(patch, PatchOp{Op: "add", Path: "/spec/volumes", Value: []corev1.Volume{}})
	}
	return append(patch, PatchOp{Op: "add", Path: "/spec/volumes/-", Value: corev1.Volume{
		Name:         PodNetInfoVolume,
		VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: items}},
	}})
}

// hugepagesItems publishes each container's hugepages requests and limits in MiB, in upstream's
// file names: hugepages_1G_request_<container>, hugepages_2M_limit_<container>.
func hugepagesItems(pod *corev1.Pod) []corev1.DownwardAPIVolumeFile {
	var items []corev1.DownwardAPIVolumeFile
	mi := resource.MustParse("1Mi")
	for _, c := range pod.Spec.Containers {
		for _, kind := range []struct {
			list   corev1.ResourceList
			prefix string
			file   string
		}{{c.Resources.Requests, "requests.", "request"}, {c.Resources.Limits, "limits.", "limit"}} {
			var names []string
			for n, q := range kind.list {
				if hugepagesResource.MatchString(string(n)) && !q.IsZero() {
					names = append(names, string(n))
				}
			}
			sort.Strings(names)
			for _, n := range names {
				size := strings.ReplaceAll(hugepagesResource.FindStringSubmatch(n)[1], "i", "")
				items = append(items, corev1.DownwardAPIVolumeFile{
					Path:             fmt.Sprintf("hugepages_%s_%s_%s", size, kind.file, c.Name),
					ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: c.Name, Resource: kind.prefix + n, Divisor: mi},
				})
			}
		}
	}
	return items
}

// hugepagesEnvPatch sets CONTAINER_NAME in each container that asks for hugepages, so it can find
// its own hugepages_* files.
func hugepagesEnvPatch(pod *corev1.Pod) []PatchOp {
	var patch []PatchOp
	for i, c := range pod.Spec.Containers {
		hp := false
		for _, l := range []corev1.ResourceList{c.Resources.Requests, c.Resources.Limits} {
			for n, q := range l {
				hp = hp || (hugepagesResource.MatchString(string(n)) && !q.IsZero())
			}
		}
		if !hp || slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == ContainerNameEnv }) {
			continue
		}
		base := "/spec/containers/" + strconv.Itoa(i) + "/env"
		if len(c.Env) == 0 {
			patch = append(patch, PatchOp{Op: "add", Path: base, Value: []corev1.EnvVar{}})
		}
		patch = append(patch, PatchOp{Op: "add", Path: base + "/-", Value: corev1.EnvVar{Name: ContainerNameEnv, Value: c.Name}})
	}
	return patch
}

// IsNotFound reports whether err says the NAD does not exist.
func IsNotFound(err error) bool { return apierrors.IsNotFound(err) }
