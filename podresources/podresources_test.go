package podresources

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// A checkpoint as kubelet v1.34 writes it (shape from its device manager), two pods.
const checkpointJSON = `{"Data":{"PodDeviceEntries":[
 {"PodUID":"uid-a","ContainerName":"app","ResourceName":"intel.com/sriov","DeviceIDs":{"0":["0000:3b:01.2"],"1":["0000:86:00.4"]},"AllocResp":"Cg=="},
 {"PodUID":"uid-a","ContainerName":"side","ResourceName":"intel.com/sriov","DeviceIDs":{"-1":["0000:3b:01.0"]},"AllocResp":"Cg=="},
 {"PodUID":"uid-a","ContainerName":"app","ResourceName":"intel.com/other","DeviceIDs":{"-1":["0000:3b:01.7"]},"AllocResp":"Cg=="},
 {"PodUID":"uid-b","ContainerName":"app","ResourceName":"intel.com/sriov","DeviceIDs":{"-1":["0000:3b:01.1"]},"AllocResp":"Cg=="}],
 "RegisteredDevices":{"intel.com/sriov":["0000:3b:01.0","0000:3b:01.1","0000:3b:01.2","0000:86:00.4"]}},"Checksum":1234}`

func writeCheckpoint(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "kubelet_internal_checkpoint")
	if err := os.WriteFile(p, []byte(checkpointJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckpointFallbackWhenKubeletIsDown(t *testing.T) {
	c := Config{Socket: filepath.Join(t.TempDir(), "absent.sock"), Checkpoint: writeCheckpoint(t)}
	ids, err := DeviceIDs(context.Background(), c, "default", "pod-a", "uid-a", "intel.com/sriov")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"0000:3b:01.0", "0000:3b:01.2", "0000:86:00.4"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("ids = %v, want %v (all containers, all NUMA nodes, sorted)", ids, want)
	}
	_, err = DeviceIDs(context.Background(), c, "default", "pod-c", "uid-c", "intel.com/sriov")
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "default/pod-c") || !strings.Contains(err.Error(), "intel.com/sriov") {
		t.Errorf("unknown pod: err = %v, want ErrNotFound naming pod and resource", err)
	}
	_, err = DeviceIDs(context.Background(), Config{Socket: c.Socket, Checkpoint: c.Checkpoint + ".missing"}, "default", "pod-a", "uid-a", "intel.com/sriov")
	if err == nil || !strings.Contains(err.Error(), "default/pod-a") {
		t.Errorf("missing checkpoint: err = %v", err)
	}
}

// lister is a PodResources peer like kubelet's; get=false answers Get as a kubelet with the
// KubeletPodResourcesGet gate off does.
type lister struct {
	podresourcesv1.UnimplementedPodResourcesListerServer
	get  bool
	pods []*podresourcesv1.PodResources
}

func (l *lister) List(context.Context, *podresourcesv1.ListPodResourcesRequest) (*podresourcesv1.ListPodResourcesResponse, error) {
	return &podresourcesv1.ListPodResourcesResponse{PodResources: l.pods}, nil
}

func (l *lister) Get(_ context.Context, r *podresourcesv1.GetPodResourcesRequest) (*podresourcesv1.GetPodResourcesResponse, error) {
	if !l.get {
		return nil, status.Error(codes.Unknown, "PodResources API Get method disabled")
	}
	for _, p := range l.pods {
		if p.Namespace == r.PodNamespace && p.Name == r.PodName {
			return &podresourcesv1.GetPodResourcesResponse{PodResources: p}, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "pod %s not found", r.PodName)
}

func serve(t *testing.T, l *lister) string {
	dir, err := os.MkdirTemp("", "mnpr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "kubelet.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	podresourcesv1.RegisterPodResourcesListerServer(s, l)
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return sock
}

func TestAPIGetThenListThenCheckpoint(t *testing.T) {
	pods := []*podresourcesv1.PodResources{{Namespace: "ns1", Name: "p", Containers: []*podresourcesv1.ContainerResources{
		{Name: "a", Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "intel.com/sriov", DeviceIds: []string{"0000:3b:01.3"}}}},
		{Name: "b", Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "intel.com/sriov", DeviceIds: []string{"0000:3b:01.4"}}, {ResourceName: "x.io/y", DeviceIds: []string{"z"}}}},
	}}}
	cp := writeCheckpoint(t)
	for _, get := range []bool{true, false} {
		sock := serve(t, &lister{get: get, pods: pods})
		ids, err := DeviceIDs(context.Background(), Config{Socket: sock, Checkpoint: cp}, "ns1", "p", "uid-p", "intel.com/sriov")
		if err != nil {
			t.Fatalf("get=%v: %v", get, err)
		}
		if want := []string{"0000:3b:01.3", "0000:3b:01.4"}; !reflect.DeepEqual(ids, want) {
			t.Errorf("get=%v: ids %v, want %v", get, ids, want)
		}
		// A pod kubelet's API does not know yet: the checkpoint answers.
		ids, err = DeviceIDs(context.Background(), Config{Socket: sock, Checkpoint: cp}, "default", "pod-b", "uid-b", "intel.com/sriov")
		if err != nil || !reflect.DeepEqual(ids, []string{"0000:3b:01.1"}) {
			t.Errorf("get=%v: checkpoint fallback: %v %v", get, ids, err)
		}
	}
}

// PodResources v1 names pods by namespace/name only. While the old pod of a name is still
// terminating, kubelet answers for it when the recreated pod of that name asks: the new pod got
// the old one's devices. The checkpoint is keyed by UID and now decides.
func TestSecurityRecreatedPodNeverGetsTheOldPodsDevices(t *testing.T) {
	const cpJSON = `{"Data":{"PodDeviceEntries":[
 {"PodUID":"uid-old","ContainerName":"app","ResourceName":"intel.com/sriov","DeviceIDs":{"-1":["0000:3b:01.2"]}},
 {"PodUID":"uid-new","ContainerName":"app","ResourceName":"intel.com/sriov","DeviceIDs":{"-1":["0000:3b:01.5"]}}]},"Checksum":1}`
	cp := filepath.Join(t.TempDir(), "kubelet_internal_checkpoint")
	if err := os.WriteFile(cp, []byte(cpJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	old := &podresourcesv1.PodResources{Namespace: "tenant", Name: "cnf-0", Containers: []*podresourcesv1.ContainerResources{
		{Name: "app", Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "intel.com/sriov", DeviceIds: []string{"0000:3b:01.2"}}}}}}
	newer := &podresourcesv1.PodResources{Namespace: "tenant", Name: "cnf-0", Containers: []*podresourcesv1.ContainerResources{
		{Name: "app", Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "intel.com/sriov", DeviceIds: []string{"0000:3b:01.5"}}}}}}
	for _, get := range []bool{true, false} {
		// kubelet still knows the old pod first (Get answers for it, List has both).
		sock := serve(t, &lister{get: get, pods: []*podresourcesv1.PodResources{old, newer}})
		ids, err := DeviceIDs(context.Background(), Config{Socket: sock, Checkpoint: cp}, "tenant", "cnf-0", "uid-new", "intel.com/sriov")
		if err != nil || !reflect.DeepEqual(ids, []string{"0000:3b:01.5"}) {
			t.Errorf("get=%v: new pod got %v, %v; want its own 0000:3b:01.5", get, ids, err)
		}
	}
	// The new pod has no devices of its own yet; the old pod's are refused, not passed on.
	cp2 := filepath.Join(t.TempDir(), "kubelet_internal_checkpoint")
	if err := os.WriteFile(cp2, []byte(strings.Replace(cpJSON, `"uid-new"`, `"uid-third"`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := serve(t, &lister{get: true, pods: []*podresourcesv1.PodResources{old}})
	ids, err := DeviceIDs(context.Background(), Config{Socket: sock, Checkpoint: cp2}, "tenant", "cnf-0", "uid-new", "intel.com/sriov")
	if err == nil || !strings.Contains(err.Error(), "UID uid-old") {
		t.Errorf("new pod without devices got %v, %v; want a refusal naming the old pod's UID", ids, err)
	}
	// Without the checkpoint, List with two pods of one name is ambiguous, not a guess.
	sock = serve(t, &lister{get: false, pods: []*podresourcesv1.PodResources{old, newer}})
	if ids, err := DeviceIDs(context.Background(), Config{Socket: sock, Checkpoint: cp + ".missing"}, "tenant", "cnf-0", "uid-new", "intel.com/sriov"); err == nil {
		t.Errorf("List with two pods of one name and no checkpoint: %v", ids)
	}
}
