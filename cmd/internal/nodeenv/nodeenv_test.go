package nodeenv

import (
	"path/filepath"
	"testing"

	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/devpools"
	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/sriovcni"
	"github.com/multinet-io/multinet/vhostuser"
)

func TestDefaults(t *testing.T) {
	for _, k := range []string{pci.EnvSysfsRoot, devinfo.EnvBase, devpools.EnvPath, sriovcni.EnvStateDir, sriovcni.EnvLogDir, sriovcni.EnvCheckpoint, "MULTINET_DEPTH"} {
		t.Setenv(k, "")
	}
	p := Sriov()
	if p.Sys.Root != "/sys" || p.StateDir != sriovcni.DefaultStateDir || p.DevInfo.Root() != devinfo.DefaultBase ||
		p.PoolsFile != devpools.DefaultPath || p.LogDir != sriovcni.DefaultLogDir || p.Checkpoint == "" {
		t.Errorf("defaults: %+v", p)
	}
	if d := Depth(); d != 0 {
		t.Errorf("depth %d", d)
	}
}

// What the binaries read: each variable lands in the value the package is given.
func TestFromEnvironment(t *testing.T) {
	d := t.TempDir()
	t.Setenv(pci.EnvSysfsRoot, "/tmp/fake")
	t.Setenv(devinfo.EnvBase, filepath.Join(d, "devinfo"))
	t.Setenv(devpools.EnvPath, filepath.Join(d, "pools.json"))
	t.Setenv(sriovcni.EnvStateDir, filepath.Join(d, "state"))
	t.Setenv(sriovcni.EnvLogDir, filepath.Join(d, "log"))
	t.Setenv(sriovcni.EnvCheckpoint, filepath.Join(d, "ckpt"))
	p := Sriov()
	if p.Sys.Root != "/tmp/fake" || p.StateDir != filepath.Join(d, "state", "sriov") || p.DevInfo.Root() != filepath.Join(d, "devinfo") ||
		p.PoolsFile != filepath.Join(d, "pools.json") || p.LogDir != filepath.Join(d, "log") || p.Checkpoint != filepath.Join(d, "ckpt") {
		t.Errorf("from env: %+v", p)
	}
	v := Vhost()
	if v.StateDir != filepath.Join(d, "state", "vhostuser") || v.DevInfo.Root() != filepath.Join(d, "devinfo") {
		t.Errorf("vhost from env: %+v", v)
	}
	for in, want := range map[string]int{"2": 2, "x": 1, "-1": 1} {
		t.Setenv("MULTINET_DEPTH", in)
		if got := Depth(); got != want {
			t.Errorf("depth %q = %d, want %d", in, got, want)
		}
	}
	if vhostuser.EnvStateDir != sriovcni.EnvStateDir {
		t.Errorf("state roots differ: %s, %s", vhostuser.EnvStateDir, sriovcni.EnvStateDir)
	}
}
