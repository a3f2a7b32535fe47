package deviceplugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	dp "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/pci/pcitest"
)

// fakeKubelet is a real gRPC peer doing what kubelet's device manager does with a plugin: serve
// Registration on kubelet.sock, dial the plugin back, read its options and follow ListAndWatch.
type fakeKubelet struct {
	dp.UnimplementedRegistrationServer
	dir string
	srv *grpc.Server

	mu    sync.Mutex
	regs  []*dp.RegisterRequest
	opts  map[string]*dp.DevicePluginOptions
	lists map[string][]*dp.Device
	conns []*grpc.ClientConn
	// block, when set, holds every Register until it is closed (a kubelet slow to answer);
	// blocked counts the calls held.
	block   chan struct{}
	blocked int
}

// startFakeKubelet starts a kubelet in dir; like kubelet, it first deletes every socket there.
func startFakeKubelet(t *testing.T, dir string) *fakeKubelet {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		_ = os.Remove(filepath.Join(dir, e.Name()))
	}
	l, err := net.Listen("unix", filepath.Join(dir, KubeletSocket))
	if err != nil {
		t.Fatal(err)
	}
	k := &fakeKubelet{dir: dir, srv: grpc.NewServer(), opts: map[string]*dp.DevicePluginOptions{}, lists: map[string][]*dp.Device{}}
	dp.RegisterRegistrationServer(k.srv, k)
	go k.srv.Serve(l)
	t.Cleanup(k.stop)
	return k
}

func (k *fakeKubelet) stop() {
	k.srv.Stop()
	k.mu.Lock()
	for _, c := range k.conns {
		c.Close()
	}
	k.conns = nil
	k.mu.Unlock()
	_ = os.Remove(filepath.Join(k.dir, KubeletSocket))
}

func (k *fakeKubelet) Register(ctx context.Context, r *dp.RegisterRequest) (*dp.Empty, error) {
	k.mu.Lock()
	block := k.block
	if block != nil {
		k.blocked++
	}
	k.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if r.Version != dp.Version {
		return nil, fmt.Errorf("unsupported version %q", r.Version)
	}
	conn, err := grpc.NewClient("unix://"+filepath.Join(k.dir, r.Endpoint), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	k.regs = append(k.regs, r)
	k.conns = append(k.conns, conn)
	k.mu.Unlock()
	go func() {
		c := dp.NewDevicePluginClient(conn)
		o, err := c.GetDevicePluginOptions(context.Background(), &dp.Empty{})
		if err != nil {
			return
		}
		k.mu.Lock()
		k.opts[r.ResourceName] = o
		k.mu.Unlock()
		s, err := c.ListAndWatch(context.Background(), &dp.Empty{})
		if err != nil {
			return
		}
		for {
			resp, err := s.Recv()
			if err != nil {
				return
			}
			k.mu.Lock()
			k.lists[r.ResourceName] = resp.Devices
			k.mu.Unlock()
		}
	}()
	return &dp.Empty{}, nil
}

func (k *fakeKubelet) registrations(resource string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := 0
	for _, r := range k.regs {
		if r.ResourceName == resource {
			n++
		}
	}
	return n
}

// health renders the latest list as "id=Healthy,..." in the plugin's order.
func (k *fakeKubelet) health(resource string) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	l, ok := k.lists[resource]
	if !ok {
		return "<no list>"
	}
	var parts []string
	for _, d := range l {
		parts = append(parts, d.ID+"="+d.Health)
	}
	return strings.Join(parts, ",")
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func healthString(ids []string, unhealthy ...string) string {
	var parts []string
	for _, id := range ids {
		h := dp.Healthy
		for _, u := range unhealthy {
			if u == id {
				h = dp.Unhealthy
			}
		}
		parts = append(parts, id+"="+h)
	}
	return strings.Join(parts, ",")
}

type managerEnv struct {
	dir, cfg string
	m        *Manager
	k        *fakeKubelet
	cancel   context.CancelFunc
	done     chan error
}

func startManager(t *testing.T, cfg string) (*managerEnv, *Discoverer) {
	t.Helper()
	dinfo := devinfo.Dir(t.TempDir())
	tr, d := fixture(t)
	_ = tr
	// Unix socket paths are short; t.TempDir() can be long.
	dir, err := os.MkdirTemp("", "mndp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &managerEnv{dir: dir, cfg: filepath.Join(t.TempDir(), "config.json"), done: make(chan error, 1)}
	if err := os.WriteFile(e.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	e.k = startFakeKubelet(t, dir)
	e.m, err = New(Options{ConfigFile: e.cfg, DevInfo: dinfo, SysfsRoot: d.Sys.Root, PluginDir: dir, Interval: 50 * time.Millisecond,
		DefaultRouteLinks: d.DefaultRouteLinks, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	go func() { e.done <- e.m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-e.done })
	return e, d
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

const twoPools = `{"resourceList":[
  {"resourceName":"iavf","selectors":{"drivers":["iavf"]}},
  {"resourceName":"dpdk","resourcePrefix":"nvidia.com","excludeTopology":true,"selectors":{"drivers":["vfio-pci"],"vendors":["15b3"]}}]}`

func TestManagerRegistersAndListsWithTopology(t *testing.T) {
	e, _ := startManager(t, twoPools)
	eventually(t, "both pools listed", func() bool {
		return e.k.health("intel.com/iavf") != "<no list>" && e.k.health("nvidia.com/dpdk") != "<no list>"
	})
	e.k.mu.Lock()
	defer e.k.mu.Unlock()
	for _, r := range e.k.regs {
		want := map[string]string{"intel.com/iavf": "intel.com_iavf.sock", "nvidia.com/dpdk": "nvidia.com_dpdk.sock"}[r.ResourceName]
		if r.Endpoint != want || !r.Options.GetPreferredAllocationAvailable {
			t.Errorf("registration %+v, want endpoint %s with preferred allocation", r, want)
		}
		if !e.k.opts[r.ResourceName].GetPreferredAllocationAvailable {
			t.Errorf("%s: GetDevicePluginOptions without preferred allocation", r.ResourceName)
		}
	}
	iavf := e.k.lists["intel.com/iavf"]
	if len(iavf) != 4 || iavf[0].ID != vf0(0) || iavf[0].Topology == nil || iavf[0].Topology.Nodes[0].ID != 0 {
		t.Errorf("iavf list %v, want 4 VFs of NUMA 0", iavf)
	}
	dpdk := e.k.lists["nvidia.com/dpdk"]
	if len(dpdk) != 2 || dpdk[0].Topology != nil {
		t.Errorf("dpdk list %v, want 2 VFs without topology (excludeTopology)", dpdk)
	}
}

func TestManagerHealthTransitions(t *testing.T) {
	e, d := startManager(t, twoPools)
	tr := treeOf(t, d)
	ids := []string{vf0(0), vf0(1), vf0(2), vf0(3)}
	const res = "intel.com/iavf"
	wait := func(what string, unhealthy ...string) {
		t.Helper()
		want := healthString(ids, unhealthy...)
		start := time.Now()
		eventually(t, what+": "+want, func() bool { return e.k.health(res) == want })
		t.Logf("%s: seen by kubelet after %s", what, time.Since(start).Round(time.Millisecond))
	}
	wait("all healthy")

	tr.RemoveNetdev(vf0(1), "ens1f0v1")
	wait("netdev removed", vf0(1))
	tr.SetNetdevs(vf0(1), "ens1f0v1")
	wait("netdev back")
	tr.SetNetdevs(vf0(1), "enp59s1f1") // renamed by udev: still there
	time.Sleep(200 * time.Millisecond)
	if got := e.k.health(res); got != healthString(ids) {
		t.Fatalf("a renamed netdev made its VF unhealthy: %s", got)
	}

	tr.SetDriver(vf0(2), "")
	wait("driver unbound", vf0(2))
	tr.SetDriver(vf0(2), "vfio-pci")
	wait("driver changed to vfio-pci (no other pool takes it)", vf0(2))
	time.Sleep(300 * time.Millisecond) // several rescans: it must stay listed, unhealthy
	if got, want := e.k.health(res), healthString(ids, vf0(2)); got != want {
		t.Fatalf("after rescans with %s on vfio-pci: %s, want %s", vf0(2), got, want)
	}
	if got := e.k.health("nvidia.com/dpdk"); strings.Contains(got, vf0(2)) {
		t.Errorf("the vendor-15b3 vfio pool took an 8086 VF: %s", got)
	}
	tr.SetDriver(vf0(2), "iavf")
	wait("driver back")

	tr.SetOperState(pf0, "ens1f0", "down")
	wait("PF link down", ids...)
	tr.SetOperState(pf0, "ens1f0", "up")
	wait("PF link up")
}

func treeOf(t *testing.T, d *Discoverer) interface {
	RemoveNetdev(string, string)
	SetNetdevs(string, ...string)
	SetDriver(string, string)
	SetOperState(string, string, string)
} {
	t.Helper()
	return fixtureTrees[d.Sys.Root]
}

func TestManagerVFInPodStaysHealthy(t *testing.T) {
	e, d := startManager(t, twoPools)
	tr := treeOf(t, d)
	const res = "intel.com/iavf"
	ids := []string{vf0(0), vf0(1), vf0(2), vf0(3)}
	eventually(t, "listed", func() bool { return e.k.health(res) == healthString(ids) })

	conn, err := grpc.NewClient("unix://"+filepath.Join(e.dir, "intel.com_iavf.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := dp.NewDevicePluginClient(conn).Allocate(context.Background(), &dp.AllocateRequest{ContainerRequests: []*dp.ContainerAllocateRequest{{DevicesIds: []string{vf0(3)}}}}); err != nil {
		t.Fatal(err)
	}
	// sriov-cni moves the netdev into the pod: the host no longer sees it.
	tr.RemoveNetdev(vf0(3), "ens1f0v3")
	time.Sleep(300 * time.Millisecond)
	if got := e.k.health(res); got != healthString(ids) {
		t.Fatalf("an allocated VF whose netdev went into its pod turned unhealthy: %s", got)
	}
	// The pod ends; the netdev comes home. A later loss is a real failure again.
	tr.SetNetdevs(vf0(3), "ens1f0v3")
	time.Sleep(300 * time.Millisecond)
	tr.RemoveNetdev(vf0(3), "ens1f0v3")
	eventually(t, "unhealthy after the VF came back and lost its netdev", func() bool { return e.k.health(res) == healthString(ids, vf0(3)) })
}

func TestManagerReregistersAfterKubeletRestart(t *testing.T) {
	e, _ := startManager(t, twoPools)
	eventually(t, "registered", func() bool { return e.k.registrations("intel.com/iavf") == 1 })
	e.k.stop()
	start := time.Now()
	k2 := startFakeKubelet(t, e.dir) // deletes our sockets, as kubelet does
	eventually(t, "re-registered with the new kubelet", func() bool {
		return k2.registrations("intel.com/iavf") == 1 && k2.registrations("nvidia.com/dpdk") == 1 &&
			k2.health("intel.com/iavf") != "<no list>" && k2.health("nvidia.com/dpdk") != "<no list>"
	})
	t.Logf("re-registered and listed %s after the kubelet restart", time.Since(start).Round(time.Millisecond))
	for _, s := range []string{"intel.com_iavf.sock", "nvidia.com_dpdk.sock"} {
		if fi, err := os.Stat(filepath.Join(e.dir, s)); err != nil || fi.Mode()&os.ModeSocket == 0 {
			t.Errorf("endpoint %s not recreated: %v", s, err)
		}
	}
}

func TestManagerReloadAddsRemovesAndKeepsLastGood(t *testing.T) {
	e, _ := startManager(t, twoPools)
	eventually(t, "listed", func() bool { return e.k.health("nvidia.com/dpdk") != "<no list>" })

	// Remove the dpdk pool, add a vhost-user pool and narrow the iavf pool.
	vdir := t.TempDir()
	next := `{"resourceList":[
	  {"resourceName":"iavf","selectors":{"drivers":["iavf"],"pfNames":["ens1f0#0-1"]}},
	  {"resourceName":"vhost","resourcePrefix":"multinet.io","deviceType":"vhostUser","vhostUser":{"dir":"` + vdir + `","count":2}}]}`
	if err := os.WriteFile(e.cfg, []byte(next), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the removed pool's list emptied", func() bool { return e.k.health("nvidia.com/dpdk") == "" })
	eventually(t, "the removed pool's socket gone", func() bool {
		_, err := os.Stat(filepath.Join(e.dir, "nvidia.com_dpdk.sock"))
		return errors.Is(err, os.ErrNotExist)
	})
	eventually(t, "iavf narrowed", func() bool { return e.k.health("intel.com/iavf") == healthString([]string{vf0(0), vf0(1)}) })
	eventually(t, "vhost pool listed", func() bool {
		return e.k.health("multinet.io/vhost") == healthString([]string{"vhost-0", "vhost-1"})
	})
	if fi, err := os.Stat(filepath.Join(vdir, "vhost-1")); err != nil || !fi.IsDir() {
		t.Errorf("slot directory not created: %v", err)
	}

	// A bad config is refused; the pools stay as they were.
	bad := strings.Replace(next, `"count":2`, `"count":-1`, 1)
	if err := os.WriteFile(e.cfg, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the bad config rejected", func() bool {
		err := e.m.ConfigError()
		return err != nil && strings.Contains(err.Error(), `"vhost": vhostUser.count -1`)
	})
	// An ambiguous one (a device in two pools) too.
	amb := `{"resourceList":[{"resourceName":"iavf","selectors":{"drivers":["iavf"]}},{"resourceName":"other","selectors":{"pfNames":["ens1f0#3"]}}]}`
	if err := os.WriteFile(e.cfg, []byte(amb), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the ambiguous config rejected", func() bool {
		err := e.m.ConfigError()
		return err != nil && strings.Contains(err.Error(), "intel.com/other")
	})
	time.Sleep(200 * time.Millisecond)
	if got := e.k.health("intel.com/iavf"); got != healthString([]string{vf0(0), vf0(1)}) {
		t.Errorf("after bad configs iavf = %s, want the last good pool", got)
	}
	if e.k.registrations("intel.com/other") != 0 {
		t.Errorf("a pool of a rejected config registered")
	}
	var names []string
	for _, st := range e.m.Status() {
		names = append(names, st.Resource)
	}
	if strings.Join(names, " ") != "intel.com/iavf multinet.io/vhost" {
		t.Errorf("pools in effect %v", names)
	}
}

func TestManagerDriverChangeMakingPoolsOverlapKeepsPools(t *testing.T) {
	e, d := startManager(t, `{"resourceList":[
	  {"resourceName":"pf0","selectors":{"pfNames":["ens1f0"]}},
	  {"resourceName":"vfio","selectors":{"drivers":["vfio-pci"]}}]}`)
	tr := treeOf(t, d)
	ids := []string{vf0(0), vf0(1), vf0(2), vf0(3)}
	eventually(t, "listed", func() bool { return e.k.health("intel.com/pf0") == healthString(ids) })
	// On vfio-pci the VF matches both pools: rediscovery fails, the pools stay, the VF is
	// unhealthy where it was.
	tr.SetDriver(vf0(2), "vfio-pci")
	eventually(t, "VF unhealthy in its pool", func() bool { return e.k.health("intel.com/pf0") == healthString(ids, vf0(2)) })
	if got := e.k.health("intel.com/vfio"); strings.Contains(got, vf0(2)) {
		t.Errorf("the vfio pool took a device another pool holds: %s", got)
	}
	tr.SetDriver(vf0(2), "iavf")
	eventually(t, "healthy once back", func() bool { return e.k.health("intel.com/pf0") == healthString(ids) })
}

func TestManagerServerInProcess(t *testing.T) {
	e, _ := startManager(t, twoPools)
	srv, err := e.m.Server("nvidia.com/dpdk")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Allocate(context.Background(), &dp.AllocateRequest{ContainerRequests: []*dp.ContainerAllocateRequest{{DevicesIds: []string{vf1(3)}}}})
	if err != nil || resp.ContainerResponses[0].Envs["PCIDEVICE_NVIDIA_COM_DPDK"] != vf1(3) {
		t.Fatalf("in-process Allocate: %v %v", resp, err)
	}
	if _, err := e.m.Server("intel.com/none"); !errors.Is(err, ErrNoPool) {
		t.Errorf("unknown resource: %v", err)
	}
}

func TestManagerStopRemovesSockets(t *testing.T) {
	e, _ := startManager(t, twoPools)
	eventually(t, "listed", func() bool { return e.k.health("nvidia.com/dpdk") != "<no list>" })
	e.cancel()
	if err := <-e.done; err != nil {
		t.Fatal(err)
	}
	e.done <- nil // for the cleanup
	for _, s := range []string{"intel.com_iavf.sock", "nvidia.com_dpdk.sock"} {
		if _, err := os.Stat(filepath.Join(e.dir, s)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after stop: %v", s, err)
		}
	}
}

// One pool this node cannot serve (upstream's documented ddpProfiles config) is refused alone:
// the others register and list their devices, the refused one is reported with its reason. An
// edit that breaks one pool later keeps that pool's last good version while the others change.
func TestManagerRefusesOnePoolServesTheOthers(t *testing.T) {
	cfg := `{"resourceList":[
	  {"resourceName":"iavf","selectors":{"drivers":["iavf"]}},
	  {"resourceName":"ddp","selectors":{"vendors":["8086"],"ddpProfiles":["GTPv1-C/U IPv4/IPv6 payload"]}},
	  {"resourceName":"dpdk","resourcePrefix":"nvidia.com","selectors":{"drivers":["vfio-pci"],"vendors":["15b3"]}}]}`
	e, _ := startManager(t, cfg)
	eventually(t, "the servable pools listed", func() bool {
		return e.k.health("intel.com/iavf") == healthString([]string{vf0(0), vf0(1), vf0(2), vf0(3)}) &&
			e.k.health("nvidia.com/dpdk") == healthString([]string{vf1(2), vf1(3)})
	})
	if got := e.k.health("intel.com/ddp"); got != "<no list>" {
		t.Errorf("the refused pool was advertised: %s", got)
	}
	ref := e.m.Refused()
	if len(ref) != 1 || ref[0].Resource != "intel.com/ddp" || !strings.Contains(ref[0].Reason, "ddpProfiles") {
		t.Fatalf("refused = %+v, want intel.com/ddp with a ddpProfiles reason", ref)
	}
	if err := e.m.ConfigError(); err == nil || !strings.Contains(err.Error(), `"ddp": selectors[0].ddpProfiles`) {
		t.Errorf("ConfigError = %v, want the ddp pool named", err)
	}

	// Narrow iavf and break dpdk in the same edit: iavf changes, dpdk keeps serving as it was.
	next := `{"resourceList":[
	  {"resourceName":"iavf","selectors":{"drivers":["iavf"],"pfNames":["ens1f0#0-1"]}},
	  {"resourceName":"dpdk","resourcePrefix":"nvidia.com","selectors":{"drivers":["vfio-pci"],"vendors":["15b3x"]}}]}`
	if err := os.WriteFile(e.cfg, []byte(next), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "iavf narrowed", func() bool { return e.k.health("intel.com/iavf") == healthString([]string{vf0(0), vf0(1)}) })
	if got := e.k.health("nvidia.com/dpdk"); got != healthString([]string{vf1(2), vf1(3)}) {
		t.Errorf("the pool whose edit was refused lost its devices: %s", got)
	}
	if ref := e.m.Refused(); len(ref) != 1 || ref[0].Resource != "nvidia.com/dpdk" || !strings.Contains(ref[0].Reason, `vendors: "15b3x"`) {
		t.Errorf("refused = %+v, want nvidia.com/dpdk with its vendors reason", ref)
	}
}

// OnRefused hears of each new set of refusals once, and of the file being fixed.
func TestManagerReportsRefusalChanges(t *testing.T) {
	var mu sync.Mutex
	var got []string
	_, d := fixture(t)
	cfg := filepath.Join(t.TempDir(), "config.json")
	write := func(s string) {
		if err := os.WriteFile(cfg, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"resourceList":[{"resourceName":"iavf","selectors":{"drivers":["iavf"]}},{"resourceName":"gtp","selectors":{"ddpProfiles":["GTP"]}}]}`)
	m, err := New(Options{ConfigFile: cfg, DevInfo: devinfo.Dir(t.TempDir()), SysfsRoot: d.Sys.Root, DefaultRouteLinks: d.DefaultRouteLinks, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		OnRefused: func(r []Refusal) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, fmt.Sprint(len(r), " ", r))
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Reload(); err != nil { // same content: nothing new to report
		t.Fatal(err)
	}
	write(`{"resourceList":[{"resourceName":"iavf","selectors":{"drivers":["iavf"]}}]}`)
	if err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || !strings.HasPrefix(got[0], "1 ") || !strings.Contains(got[0], `"gtp": selectors[0].ddpProfiles`) || got[1] != "0 []" {
		t.Fatalf("reports %q, want the gtp refusal once, then an empty list", got)
	}
}

// A subfunction created while the plugin runs (devlink port add) joins its pool without a
// restart: the auxiliary bus is part of what the plugin watches.
func TestManagerRediscoversNewSubfunction(t *testing.T) {
	e, d := startManager(t, `{"resourceList":[{"resourceName":"sf","resourcePrefix":"nvidia.com","deviceType":"auxNetDevice",
	  "selectors":{"pfNames":["ens2f0"],"auxTypes":["sf"]}}]}`)
	eventually(t, "empty sf pool listed", func() bool { return e.k.health("nvidia.com/sf") == "" })
	fixtureTrees[d.Sys.Root].AddAux(pcitest.Aux{Parent: pf1, Name: "mlx5_core.sf.2", Driver: "mlx5_core.sf", SFNum: 7, Netdev: "ens2f0s7"})
	eventually(t, "the new subfunction listed", func() bool {
		return e.k.health("nvidia.com/sf") == healthString([]string{"mlx5_core.sf.2"})
	})
}

// A kubelet slow to answer Register (the call may take its full 5 s) must not stall the
// manager: while a registration hangs, calls that need the manager's lock (the status the
// agent and the command read) still answer at once, and the registration completes later.
func TestRegistrationDoesNotHoldTheManagerLock(t *testing.T) {
	dinfo := devinfo.Dir(t.TempDir())
	_, d := fixture(t)
	dir, err := os.MkdirTemp("", "mndp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(cfg, []byte(twoPools), 0o644); err != nil {
		t.Fatal(err)
	}
	k := startFakeKubelet(t, dir)
	release := make(chan struct{})
	k.mu.Lock()
	k.block = release
	k.mu.Unlock()
	m, err := New(Options{ConfigFile: cfg, DevInfo: dinfo, SysfsRoot: d.Sys.Root, PluginDir: dir, Interval: 50 * time.Millisecond,
		DefaultRouteLinks: d.DefaultRouteLinks, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done }()

	for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		k.mu.Lock()
		n := k.blocked
		k.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("the manager never called Register")
		}
	}
	answered := make(chan struct{})
	go func() {
		_ = m.ConfigError()
		_ = m.Refused()
		close(answered)
	}()
	select {
	case <-answered:
	case <-time.After(time.Second):
		t.Fatal("ConfigError/Refused blocked behind a registration call to a slow kubelet")
	}
	close(release)
	for start := time.Now(); k.registrations("intel.com/iavf") == 0; time.Sleep(20 * time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatal("no registration once kubelet answered")
		}
	}
}
