package deviceplugin

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/devpools"
)

// The device plugin publishes which PCI devices are in its pools, for the sriov plugin to refuse
// every other VF; the file follows config reloads.
func TestSecurityPoolsFileFollowsThePools(t *testing.T) {
	t.Setenv(devinfo.EnvBase, t.TempDir())
	_, d := fixture(t)
	cfg := filepath.Join(t.TempDir(), "config.json")
	pf := filepath.Join(t.TempDir(), "pools", "pools.json")
	if err := os.WriteFile(cfg, []byte(twoPools), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := New(Options{ConfigFile: cfg, SysfsRoot: d.Sys.Root, PluginDir: t.TempDir(), DefaultRouteLinks: d.DefaultRouteLinks,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)), PoolsFile: pf})
	if err != nil {
		t.Fatal(err)
	}
	f, err := devpools.Read(pf)
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]string{vf0(0): "intel.com/iavf", vf0(3): "intel.com/iavf", vf1(2): "nvidia.com/dpdk",
		vf1(0): "", uplink: "", pf0: ""} {
		if got := f.PoolOf(addr); got != want {
			t.Errorf("pool of %s = %q, want %q", addr, got, want)
		}
	}
	if err := os.WriteFile(cfg, []byte(`{"resourceList":[{"resourceName":"dpdk","resourcePrefix":"nvidia.com","selectors":{"drivers":["vfio-pci"],"vendors":["15b3"]}}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	if f, err = devpools.Read(pf); err != nil {
		t.Fatal(err)
	}
	if got := f.PoolOf(vf0(0)); got != "" {
		t.Errorf("after the iavf pool was removed, %s is still in pool %q", vf0(0), got)
	}
	if got := f.PoolOf(vf1(3)); got != "nvidia.com/dpdk" {
		t.Errorf("pool of %s = %q after reload", vf1(3), got)
	}
}
