package agent_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	dp "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/multinet-io/multinet/agent"
	"github.com/multinet-io/multinet/deviceplugin"
	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/pci/pcitest"
)

// The VF node policy hosted in the agent: applied at start, applied again when the file
// changes, and a broken edit leaves the node as it was.
func TestAgentAppliesVFPolicyOnChange(t *testing.T) {
	tree := pcitest.New(t)
	tree.AddIgbPF("0000:00:02.0", "enp0s2", 0x12)
	tree.StartKernel()
	dir := t.TempDir()
	policy := filepath.Join(dir, "vf-policy.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(policy, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("pfs:\n- pf: enp0s2\n  numVfs: 2\n")
	a, err := agent.New(agent.Config{Socket: filepath.Join(dir, "run", "s.sock"), SysfsRoot: tree.Root, VFPolicyFile: policy,
		VFPolicyInterval: 50 * time.Millisecond, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	sys := pci.New(tree.Root)
	waitVFs := func(want int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			d, err := sys.Device("0000:00:02.0")
			if err == nil && d.NumVFs == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("PF has %d VFs, want %d (err %v)", d.NumVFs, want, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitVFs(2)
	write("pfs:\n- pf: enp0s2\n  numVfs: 3\n")
	waitVFs(3)
	write("pfs:\n- pf: enp0s2\n  numVfs: -4\n")
	time.Sleep(300 * time.Millisecond)
	waitVFs(3)
}

// registrar is a real gRPC peer doing kubelet's part: it serves Registration on kubelet.sock,
// dials the plugin back and follows its ListAndWatch.
type registrar struct {
	dp.UnimplementedRegistrationServer
	dir   string
	mu    sync.Mutex
	lists map[string]int
}

func (r *registrar) Register(_ context.Context, req *dp.RegisterRequest) (*dp.Empty, error) {
	conn, err := grpc.NewClient("unix://"+filepath.Join(r.dir, req.Endpoint), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
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
			r.lists[req.ResourceName] = len(resp.Devices)
			r.mu.Unlock()
		}
	}()
	return &dp.Empty{}, nil
}

// The device plugin hosted in the agent: kubelet's registration is served by the agent, and the
// VFs the agent's VF policy creates are advertised.
func TestAgentHostsDevicePlugin(t *testing.T) {
	tree := pcitest.New(t)
	tree.AddIgbPF("0000:00:02.0", "enp0s2", 0x12)
	tree.StartKernel()
	dir := t.TempDir()
	dpDir, err := os.MkdirTemp("", "mnadp") // unix socket paths are short
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dpDir) })
	l, err := net.Listen("unix", filepath.Join(dpDir, deviceplugin.KubeletSocket))
	if err != nil {
		t.Fatal(err)
	}
	reg := &registrar{dir: dpDir, lists: map[string]int{}}
	srv := grpc.NewServer()
	dp.RegisterRegistrationServer(srv, reg)
	go srv.Serve(l)
	defer srv.Stop()

	policy := filepath.Join(dir, "vf-policy.yaml")
	os.WriteFile(policy, []byte("pfs:\n- pf: enp0s2\n  numVfs: 3\n"), 0o644)
	cfg := filepath.Join(dir, "config.json")
	os.WriteFile(cfg, []byte(`{"resourceList":[{"resourceName":"igbvf","selectors":{"drivers":["igbvf"]}}]}`), 0o644)
	a, err := agent.New(agent.Config{Socket: filepath.Join(dir, "run", "s.sock"), SysfsRoot: tree.Root, VFPolicyFile: policy,
		DevicePlugin: &deviceplugin.Options{ConfigFile: cfg, SysfsRoot: tree.Root, DevInfo: devinfo.Dir(t.TempDir()), PluginDir: dpDir, Interval: 50 * time.Millisecond,
			DefaultRouteLinks: func() ([]string, error) { return nil, nil }},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		reg.mu.Lock()
		n := reg.lists["intel.com/igbvf"]
		reg.mu.Unlock()
		if n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kubelet sees %d devices of intel.com/igbvf, want the policy's 3 VFs", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dpDir, "intel.com_igbvf.sock")); !os.IsNotExist(err) {
		t.Errorf("device plugin socket left after the agent stopped: %v", err)
	}
}
