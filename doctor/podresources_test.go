package doctor_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/multinet-io/multinet/doctor"
)

// kubelet serves kubelet's PodResources v1 List on a unix socket, as kubelet does on
// pod-resources/kubelet.sock; set changes what it lists.
type kubelet struct {
	podresourcesv1.UnimplementedPodResourcesListerServer
	mu   sync.Mutex
	pods []*podresourcesv1.PodResources
}

func (k *kubelet) List(context.Context, *podresourcesv1.ListPodResourcesRequest) (*podresourcesv1.ListPodResourcesResponse, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return &podresourcesv1.ListPodResourcesResponse{PodResources: k.pods}, nil
}

// set lists the pods, each "namespace/name" with the devices kubelet gave its container.
func (k *kubelet) set(pods map[string][]string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.pods = nil
	for pod, ids := range pods {
		ns, name, _ := strings.Cut(pod, "/")
		k.pods = append(k.pods, &podresourcesv1.PodResources{Namespace: ns, Name: name, Containers: []*podresourcesv1.ContainerResources{
			{Name: "app", Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "intel.com/sriov", DeviceIds: ids}}}}})
	}
}

func serveKubelet(t *testing.T) (*kubelet, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "mnkubelet") // short: a unix socket path has 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "kubelet.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	k := &kubelet{}
	s := grpc.NewServer()
	podresourcesv1.RegisterPodResourcesListerServer(s, k)
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return k, sock
}

func findings(r *doctor.Report, kind string) []doctor.Finding {
	var out []doctor.Finding
	for _, f := range r.Findings {
		if f.Kind == kind {
			out = append(out, f)
		}
	}
	return out
}

// doctor asks kubelet's PodResources which pod holds which VF and compares it with the
// ownership records: agreeing, nothing is reported and the holdings say kubelet agrees; a VF we
// record for pod A that kubelet gave pod C, and a record whose pod kubelet no longer lists, are
// each reported naming the VF and both pods; kubelet not answering on its socket is reported.
func TestDoctorComparesOwnershipWithKubeletPodResources(t *testing.T) {
	n := newNode(t)
	podA, podB := n.pod(), n.pod()
	n.attach("ctr-a", "cnf-a", podA, 0)
	n.attach("ctr-b", "cnf-b", podB, 1)
	k, sock := serveKubelet(t)
	n.cfg.PodResourcesSocket = sock
	k.set(map[string][]string{"default/cnf-a": {vf(0)}, "default/cnf-b": {vf(1)}, "default/dpdk": {vf(2)}})

	r := n.check()
	if !r.OK() {
		t.Fatalf("kubelet agrees with the records, findings: %v", kinds(r))
	}
	byDev := map[string]doctor.Holding{}
	for _, h := range r.Holdings {
		byDev[h.Device] = h
	}
	if h := byDev[vf(0)]; h.Pod != "default/cnf-a" || !strings.Contains(strings.Join(h.Source, ","), "podresources") {
		t.Errorf("holding of %s = %+v, want pod default/cnf-a with kubelet's PodResources as a source", vf(0), h)
	}
	// A VF kubelet gave a pod with no CNI step (a DPDK pod): listed as that pod's.
	if h := byDev[vf(2)]; h.Pod != "default/dpdk" || strings.Join(h.Source, ",") != "podresources" {
		t.Errorf("holding of %s = %+v, want pod default/dpdk from PodResources", vf(2), h)
	}

	// kubelet gave pod A's VF to pod C, and no longer lists pod B.
	k.set(map[string][]string{"default/cnf-a": {}, "default/cnf-c": {vf(0)}})
	r = n.check()
	got := findings(r, doctor.KubeletMismatch)
	if len(got) != 2 || len(r.Findings) != 2 {
		t.Fatalf("findings = %v, want two kubelet mismatches", kinds(r))
	}
	for _, f := range got {
		switch f.Subject {
		case vf(0):
			if !strings.Contains(f.Detail, "default/cnf-a") || !strings.Contains(f.Detail, "ctr-a") || !strings.Contains(f.Detail, "default/cnf-c") {
				t.Errorf("%s: %q does not name the recorded pod, its container and kubelet's pod", f.Subject, f.Detail)
			}
		case vf(1):
			if !strings.Contains(f.Detail, "default/cnf-b") || !strings.Contains(f.Detail, "no longer lists") {
				t.Errorf("%s: %q does not say kubelet no longer lists pod default/cnf-b", f.Subject, f.Detail)
			}
		default:
			t.Errorf("mismatch about %s: %s", f.Subject, f.Detail)
		}
		if !strings.HasPrefix(f.Fix, "none") {
			t.Errorf("%s: automatic fix %q for a mismatch only an operator can settle", f.Subject, f.Fix)
		}
	}
	if steps := doctor.Fix(n.cfg, r, false); len(steps) != 0 {
		t.Errorf("--fix acted on kubelet mismatches: %+v", steps)
	}

	// kubelet's socket is there but nobody answers (kubelet restarting): reported, not hidden.
	dead := filepath.Join(filepath.Dir(sock), "dead.sock")
	makeSocket(t, dead)
	n.cfg.PodResourcesSocket = dead
	if r := n.check(); len(findings(r, doctor.Unreadable)) != 1 || findings(r, doctor.Unreadable)[0].Subject != dead {
		t.Errorf("kubelet not answering: findings %v, want the socket unreadable", kinds(r))
	}
	// No kubelet on the node (no socket): nothing to compare, nothing reported.
	n.cfg.PodResourcesSocket = filepath.Join(filepath.Dir(sock), "absent.sock")
	if r := n.check(); !r.OK() {
		t.Errorf("no kubelet socket: findings %v", kinds(r))
	}
}

// The sriov plugin's temporary netns of a VF (netns/<BDF> in its state dir) outlives a process
// killed mid-move; while the VF has an ownership record its DEL takes the VF back, without one
// no DEL will: doctor reports it.
func TestDoctorReportsTempNetnsOfNoOwner(t *testing.T) {
	n := newNode(t)
	pod := n.pod()
	n.attach("ctr-a", "cnf-a", pod, 0)
	dir := filepath.Join(n.cfg.SriovStateDir, "netns")
	os.MkdirAll(dir, 0o700)
	for _, v := range []string{vf(0), vf(2)} {
		if err := os.WriteFile(filepath.Join(dir, v), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got := findings(n.check(), doctor.StaleNetns)
	if len(got) != 1 || got[0].Subject != vf(2) {
		t.Fatalf("stale-netns findings %+v, want only %s (VF %s has an owner)", got, vf(2), vf(0))
	}
}
