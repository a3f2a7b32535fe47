//go:build e2e_vm

package guest

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	dp "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/multinet-io/multinet/devinfo"
)

// registrar is the kubelet side of device plugin registration, in the test: it records who
// registered and follows their ListAndWatch streams, as kubelet does.
type registrar struct {
	dp.UnimplementedRegistrationServer
	dir   string
	mu    sync.Mutex
	lists map[string][]*dp.Device
	eps   map[string]string
}

func (r *registrar) Register(_ context.Context, req *dp.RegisterRequest) (*dp.Empty, error) {
	conn, err := grpc.NewClient("unix://"+filepath.Join(r.dir, req.Endpoint), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.eps[req.ResourceName] = req.Endpoint
	r.mu.Unlock()
	go func() {
		defer conn.Close()
		s, err := dp.NewDevicePluginClient(conn).ListAndWatch(context.Background(), &dp.Empty{})
		if err != nil {
			return
		}
		for {
			resp, err := s.Recv()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.lists[req.ResourceName] = resp.Devices
			r.mu.Unlock()
		}
	}()
	return &dp.Empty{}, nil
}

func (r *registrar) health(res string) map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := map[string]string{}
	for _, d := range r.lists[res] {
		m[d.ID] = d.Health
	}
	return m
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%s after %s", what, time.Since(start).Round(time.Millisecond))
}

func TestDevicePluginIgbVFs(t *testing.T) {
	inGuest(t)
	m, vfs := withVFs(t, pf1, 3)
	if err := m.Sys.Bind(vfs[2], "vfio-pci"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Sys.BindDefault(vfs[2]) })

	pfl, operUp := pfUp(t, pf1)
	p := startDevicePlugin(t, `{"resourceList":[
	  {"resourceName":"igbvf","selectors":{"vendors":["8086"],"devices":["10ca"],"drivers":["igbvf"]}},
	  {"resourceName":"igb_dpdk","selectors":{"vendors":["8086"],"drivers":["vfio-pci"]}}]}`)
	reg, devinfoDir := p.reg, p.devinfoDir

	waitFor(t, "both pools listed healthy", func() bool {
		h, v := reg.health("intel.com/igbvf"), reg.health("intel.com/igb_dpdk")
		return len(h) == 2 && len(v) == 1 && h[vfs[0]] == dp.Healthy && v[vfs[2]] == dp.Healthy
	})
	if h := reg.health("intel.com/igbvf"); h[vfs[0]] != dp.Healthy || h[vfs[1]] != dp.Healthy {
		t.Errorf("igbvf pool = %v, want %s and %s healthy", h, vfs[0], vfs[1])
	}
	if h := reg.health("intel.com/igb_dpdk"); h[vfs[2]] != dp.Healthy {
		t.Errorf("vfio pool = %v, want %s", h, vfs[2])
	}

	// Allocate the vfio VF through the plugin's socket, as kubelet would.
	r := p.allocate(t, "igb_dpdk", vfs[2])
	group, err := m.Sys.VFIODevicePath(vfs[2])
	if err != nil {
		t.Fatal(err)
	}
	var specs []string
	for _, d := range r.Devices {
		specs = append(specs, d.HostPath)
		if _, err := os.Stat(d.HostPath); err != nil {
			t.Errorf("device spec %s does not exist on the host: %v", d.HostPath, err)
		}
	}
	sort.Strings(specs)
	if want := []string{group, "/dev/vfio/vfio"}; strings.Join(specs, " ") != strings.Join(want, " ") {
		t.Errorf("device specs %v, want %v", specs, want)
	}
	if r.Envs["PCIDEVICE_INTEL_COM_IGB_DPDK"] != vfs[2] || !strings.Contains(r.Envs["PCIDEVICE_INTEL_COM_IGB_DPDK_INFO"], `"dev-mount":"`+group+`"`) {
		t.Errorf("envs %v", r.Envs)
	}
	if di, err := devinfo.Load(filepath.Join(devinfoDir, "dp", "intel.com-igb_dpdk-"+vfs[2]+"-device.json")); err != nil || di == nil || di.Pci.PfPciAddress != pf1 {
		t.Errorf("device-info %+v %v", di, err)
	}

	// The real PF link goes down: its VFs turn unhealthy; up again: healthy.
	if err := netlink.LinkSetDown(pfl); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "VFs unhealthy with the PF down", func() bool {
		h := reg.health("intel.com/igbvf")
		return h[vfs[0]] == dp.Unhealthy && h[vfs[1]] == dp.Unhealthy && reg.health("intel.com/igb_dpdk")[vfs[2]] == dp.Unhealthy
	})
	if err := netlink.LinkSetUp(pfl); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "VFs healthy with the PF up again", func() bool {
		h := reg.health("intel.com/igbvf")
		return operUp() && h[vfs[0]] == dp.Healthy && h[vfs[1]] == dp.Healthy
	})

	// The vfio VF goes back to igbvf: it moves to the netdev pool without a restart.
	if err := m.Sys.BindDefault(vfs[2]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "rebound VF in the igbvf pool", func() bool { return len(reg.health("intel.com/igbvf")) == 3 })
}

// pfUp brings the PF's link up (it decides its VFs' health and link) for the test, and waits
// until igb has finished negotiating.
func pfUp(t *testing.T, pf string) (netlink.Link, func() bool) {
	t.Helper()
	pfl, err := netlink.LinkByName(pfNetdev(t, pf))
	if err != nil {
		t.Fatal(err)
	}
	if pfl.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(pfl); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { netlink.LinkSetDown(pfl) })
	}
	operUp := func() bool {
		b, _ := os.ReadFile("/sys/bus/pci/devices/" + pf + "/net/" + pfl.Attrs().Name + "/operstate")
		return strings.TrimSpace(string(b)) == "up"
	}
	waitFor(t, "PF operstate up", operUp)
	return pfl, operUp
}

// pluginRun is /bin/multinet-deviceplugin registered with the test's kubelet registrar.
type pluginRun struct {
	reg             *registrar
	dir, devinfoDir string
}

// startDevicePlugin runs the device plugin binary with the config until the test ends, its
// log in the test's log.
func startDevicePlugin(t *testing.T, config string) *pluginRun {
	t.Helper()
	dir, err := os.MkdirTemp("", "dp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	reg := &registrar{dir: dir, lists: map[string][]*dp.Device{}, eps: map[string]string{}}
	l, err := net.Listen("unix", filepath.Join(dir, "kubelet.sock"))
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	dp.RegisterRegistrationServer(srv, reg)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)

	cfg := filepath.Join(dir, "config.json")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	devinfoDir := filepath.Join(dir, "devinfo")
	cmd := exec.Command("/bin/multinet-deviceplugin", "--config", cfg, "--sysfs-root", "/sys", "--device-plugin-dir", dir,
		"--pools-file", filepath.Join(dir, "pools.json")) // not the node's: the sriov tests use VFs of no pool
	cmd.Env = append(os.Environ(), devinfo.EnvBase+"="+devinfoDir)
	logb := &strings.Builder{}
	var logMu sync.Mutex
	cmd.Stdout, cmd.Stderr = lockedWriter{logb, &logMu}, lockedWriter{logb, &logMu}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		logMu.Lock()
		t.Logf("plugin log:\n%s", logb.String())
		logMu.Unlock()
	})
	return &pluginRun{reg: reg, dir: dir, devinfoDir: devinfoDir}
}

// allocate asks the plugin for devices of a pool (intel.com/<pool>) through its socket, as
// kubelet does for a container.
func (p *pluginRun) allocate(t *testing.T, pool string, ids ...string) *dp.ContainerAllocateResponse {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+filepath.Join(p.dir, "intel.com_"+pool+".sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := dp.NewDevicePluginClient(conn).Allocate(context.Background(), &dp.AllocateRequest{ContainerRequests: []*dp.ContainerAllocateRequest{{DevicesIds: ids}}})
	if err != nil {
		t.Fatalf("allocate %v from %s: %v", ids, pool, err)
	}
	return resp.ContainerResponses[0]
}

type lockedWriter struct {
	b  *strings.Builder
	mu *sync.Mutex
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
