// Package podresources finds the devices kubelet allocated to a pod for a resource: what the
// meta-plugin needs to turn a NAD's resourceName into the deviceIDs of its attachments.
//
// It asks kubelet's PodResources v1 API (Get for the one pod, else List), and when kubelet does
// not answer or does not know the pod yet, reads the device manager's checkpoint file.
package podresources

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// Defaults of a stock kubelet.
const (
	DefaultSocket     = "/var/lib/kubelet/pod-resources/kubelet.sock"
	DefaultCheckpoint = "/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint"
)

// Config says where kubelet's sockets and files are; empty fields take the defaults.
type Config struct {
	Socket     string // default /var/lib/kubelet/pod-resources/kubelet.sock
	Checkpoint string // default /var/lib/kubelet/device-plugins/kubelet_internal_checkpoint
}

// ErrNotFound is returned (wrapped) when no source knows devices of the resource for the pod.
var ErrNotFound = errors.New("no devices allocated")

// apiTimeout bounds each call to kubelet; a CNI ADD must not hang on a stuck kubelet.
const apiTimeout = 5 * time.Second

// DeviceIDs returns the device IDs kubelet allocated to the pod for resourceName, over all its
// containers, sorted. It asks PodResources v1 Get for the pod, falls back to List, then to the
// checkpoint file (keyed by podUID). Errors name the pod and resource.
//
// PodResources v1 names pods by namespace and name only (neither Get nor List carries a UID), so
// while a deleted pod is still terminating kubelet may answer for it when a new pod of the same
// name asks. The checkpoint is keyed by pod UID: with the UID given and the checkpoint readable,
// its entries for this UID win over the API's answer, and devices the API gives that the
// checkpoint records for another pod only are refused.
func DeviceIDs(ctx context.Context, c Config, namespace, name, podUID, resourceName string) ([]string, error) {
	if c.Socket == "" {
		c.Socket = DefaultSocket
	}
	if c.Checkpoint == "" {
		c.Checkpoint = DefaultCheckpoint
	}
	pod := namespace + "/" + name
	ids, apiErr := fromAPI(ctx, c.Socket, namespace, name, resourceName)
	if apiErr == nil && len(ids) > 0 {
		if podUID == "" {
			return ids, nil
		}
		cp, err := readCheckpoint(c.Checkpoint)
		if err != nil {
			return ids, nil // nothing keyed by UID to check against
		}
		if mine := cp.devices(podUID, resourceName); len(mine) > 0 {
			return mine, nil
		}
		if other := cp.ownerOtherThan(ids, podUID); other != "" {
			return nil, fmt.Errorf("pod %s (UID %s) resource %s: kubelet PodResources answered with devices %v that kubelet's checkpoint records for another pod, UID %s (a deleted pod of the same name): %w",
				pod, podUID, resourceName, ids, other, ErrNotFound)
		}
		return ids, nil
	}
	if podUID == "" {
		return nil, fmt.Errorf("pod %s resource %s: %w (no pod UID for the checkpoint fallback)", pod, resourceName, apiErr)
	}
	ids, cpErr := FromCheckpoint(c.Checkpoint, podUID, resourceName)
	if cpErr != nil {
		return nil, fmt.Errorf("pod %s resource %s: %w; checkpoint: %w", pod, resourceName, apiErr, cpErr)
	}
	return ids, nil
}

// fromAPI returns the pod's devices, or an error saying why kubelet could not tell; a pod kubelet
// knows without devices of the resource is ErrNotFound.
func fromAPI(ctx context.Context, socket, namespace, name, resourceName string) ([]string, error) {
	if _, err := os.Stat(socket); err != nil {
		return nil, fmt.Errorf("kubelet PodResources: %w", err)
	}
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("kubelet PodResources %s: %w", socket, err)
	}
	defer conn.Close()
	cl := podresourcesv1.NewPodResourcesListerClient(conn)

	cctx, cancel := context.WithTimeout(ctx, apiTimeout)
	got, getErr := cl.Get(cctx, &podresourcesv1.GetPodResourcesRequest{PodNamespace: namespace, PodName: name})
	cancel()
	if getErr == nil && got.PodResources != nil {
		return collect(got.PodResources, resourceName)
	}
	// Get is behind a feature gate on older kubelets, and fails for a pod it has not admitted
	// yet; List has always been there.
	cctx, cancel = context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	list, err := cl.List(cctx, &podresourcesv1.ListPodResourcesRequest{})
	if err != nil {
		return nil, fmt.Errorf("kubelet PodResources Get: %v; List: %w", getErr, err)
	}
	var match []*podresourcesv1.PodResources
	for _, p := range list.PodResources {
		if p.Namespace == namespace && p.Name == name {
			match = append(match, p)
		}
	}
	switch len(match) {
	case 0:
		return nil, fmt.Errorf("kubelet PodResources: pod not listed: %w", ErrNotFound)
	case 1:
		return collect(match[0], resourceName)
	}
	// An old pod of the same name is still there: List cannot tell which is which.
	return nil, fmt.Errorf("kubelet PodResources: %d pods listed under that name: %w", len(match), ErrNotFound)
}

func collect(p *podresourcesv1.PodResources, resourceName string) ([]string, error) {
	var ids []string
	for _, c := range p.Containers {
		for _, d := range c.Devices {
			if d.ResourceName == resourceName {
				ids = append(ids, d.DeviceIds...)
			}
		}
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("kubelet PodResources: %w", ErrNotFound)
	}
	return sortUnique(ids), nil
}

func sortUnique(ids []string) []string {
	sort.Strings(ids)
	out := ids[:0]
	for i, id := range ids {
		if i == 0 || id != ids[i-1] {
			out = append(out, id)
		}
	}
	return out
}

// checkpoint is the part of kubelet's device manager checkpoint we read. DeviceIDs maps a NUMA
// node ("-1" when none) to IDs.
type checkpoint struct {
	Data struct {
		PodDeviceEntries []struct {
			PodUID        string              `json:"PodUID"`
			ContainerName string              `json:"ContainerName"`
			ResourceName  string              `json:"ResourceName"`
			DeviceIDs     map[string][]string `json:"DeviceIDs"`
		} `json:"PodDeviceEntries"`
	} `json:"Data"`
}

// FromCheckpoint reads the devices of podUID for resourceName from kubelet's checkpoint file.
func FromCheckpoint(path, podUID, resourceName string) ([]string, error) {
	cp, err := readCheckpoint(path)
	if err != nil {
		return nil, err
	}
	ids := cp.devices(podUID, resourceName)
	if len(ids) == 0 {
		return nil, fmt.Errorf("%s: pod UID %s: %w", path, podUID, ErrNotFound)
	}
	return ids, nil
}

// devices returns the pod's devices of the resource, sorted; nil when there are none.
func (cp *checkpoint) devices(podUID, resourceName string) []string {
	var ids []string
	for _, e := range cp.Data.PodDeviceEntries {
		if e.PodUID != podUID || e.ResourceName != resourceName {
			continue
		}
		for _, l := range e.DeviceIDs {
			ids = append(ids, l...)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	return sortUnique(ids)
}

// ownerOtherThan returns the UID of a pod other than podUID the checkpoint gives one of ids to,
// "" when there is none.
func (cp *checkpoint) ownerOtherThan(ids []string, podUID string) string {
	for _, e := range cp.Data.PodDeviceEntries {
		if e.PodUID == podUID {
			continue
		}
		for _, l := range e.DeviceIDs {
			for _, id := range l {
				if slices.Contains(ids, id) {
					return e.PodUID
				}
			}
		}
	}
	return ""
}

// DeviceOwners reads kubelet's checkpoint and returns, per device ID, the UIDs of the pods kubelet
// allocated it to (for any resource): who a device belongs to, whatever its pods' names.
func DeviceOwners(path string) (map[string][]string, error) {
	cp, err := readCheckpoint(path)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, e := range cp.Data.PodDeviceEntries {
		for _, l := range e.DeviceIDs {
			for _, id := range l {
				if !slices.Contains(out[id], e.PodUID) {
					out[id] = append(out[id], e.PodUID)
				}
			}
		}
	}
	return out, nil
}

func readCheckpoint(path string) (*checkpoint, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cp checkpoint
	if err := json.Unmarshal(b, &cp); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &cp, nil
}

// Listing is kubelet's whole view of the node from PodResources List: the pods it runs and,
// per device ID, the pods ("namespace/name") it allocated the device to, for any resource.
type Listing struct {
	Pods    map[string]bool
	Devices map[string][]string
}

// List asks kubelet's PodResources v1 List which pod holds which device (doctor compares it
// with multinet's own records).
func List(ctx context.Context, socket string) (*Listing, error) {
	if socket == "" {
		socket = DefaultSocket
	}
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("kubelet PodResources %s: %w", socket, err)
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	list, err := podresourcesv1.NewPodResourcesListerClient(conn).List(cctx, &podresourcesv1.ListPodResourcesRequest{})
	if err != nil {
		return nil, fmt.Errorf("kubelet PodResources %s: List: %w", socket, err)
	}
	l := &Listing{Pods: map[string]bool{}, Devices: map[string][]string{}}
	for _, p := range list.PodResources {
		pod := p.Namespace + "/" + p.Name
		l.Pods[pod] = true
		for _, c := range p.Containers {
			for _, d := range c.Devices {
				for _, id := range d.DeviceIds {
					if !slices.Contains(l.Devices[id], pod) {
						l.Devices[id] = append(l.Devices[id], pod)
					}
				}
			}
		}
	}
	return l, nil
}
