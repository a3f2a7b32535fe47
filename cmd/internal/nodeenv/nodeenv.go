// Package nodeenv reads the environment the multinet binaries take their node settings from.
// It is the only place they are read: packages get them as values (Config fields, struct
// fields), so one process can serve two sysfs roots or state dirs, and nothing deep in a
// package changes behaviour with the process environment.
package nodeenv

import (
	"os"
	"path/filepath"

	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/devpools"
	"github.com/multinet-io/multinet/meta/delcache"
	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/podresources"
	"github.com/multinet-io/multinet/sriovcni"
	"github.com/multinet-io/multinet/vhostuser"
)

// Or returns the variable k, or def when it is unset or empty.
func Or(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// SysfsRoot is MULTINET_SYSFS_ROOT, or /sys.
func SysfsRoot() string { return Or(pci.EnvSysfsRoot, pci.DefaultSysfsRoot) }

// DevInfo is MULTINET_DEVINFO_DIR, or the upstream device-info root.
func DevInfo() devinfo.Dir { return devinfo.Dir(Or(devinfo.EnvBase, devinfo.DefaultBase)) }

// PoolsFile is MULTINET_POOLS_FILE, or the device plugin's default.
func PoolsFile() string { return Or(devpools.EnvPath, devpools.DefaultPath) }

// SriovStateDir is <MULTINET_STATE_DIR>/sriov, or sriovcni.DefaultStateDir.
func SriovStateDir() string {
	if d := os.Getenv(sriovcni.EnvStateDir); d != "" {
		return filepath.Join(d, "sriov")
	}
	return sriovcni.DefaultStateDir
}

// VhostStateDir is <MULTINET_STATE_DIR>/vhostuser, or vhostuser.DefaultStateDir.
func VhostStateDir() string {
	if d := os.Getenv(vhostuser.EnvStateDir); d != "" {
		return filepath.Join(d, "vhostuser")
	}
	return vhostuser.DefaultStateDir
}

// SriovLogDir is MULTINET_LOG_DIR, or sriovcni.DefaultLogDir: the only dir a netconf's logFile
// may name.
func SriovLogDir() string { return Or(sriovcni.EnvLogDir, sriovcni.DefaultLogDir) }

// Depth is MULTINET_DEPTH as a meta-plugin finds it: how many meta-plugins run above it (an
// unreadable value counts as nested, so a loop still stops).
func Depth() int { return delcache.ParseDepth(os.Getenv(delcache.EnvDepth)) }

// Sriov is the sriov plugin over the environment: MULTINET_SYSFS_ROOT, MULTINET_STATE_DIR,
// MULTINET_DEVINFO_DIR, MULTINET_POOLS_FILE, MULTINET_SRIOV_POOL_CHECK,
// MULTINET_KUBELET_CHECKPOINT and MULTINET_LOG_DIR (or their defaults).
func Sriov() *sriovcni.Plugin {
	return &sriovcni.Plugin{Sys: pci.New(SysfsRoot()), StateDir: SriovStateDir(), DevInfo: DevInfo(),
		PoolsFile: PoolsFile(), PoolCheck: os.Getenv(sriovcni.EnvPoolCheck),
		Checkpoint: Or(sriovcni.EnvCheckpoint, podresources.DefaultCheckpoint), LogDir: SriovLogDir()}
}

// Vhost is the vhostuser plugin over MULTINET_STATE_DIR, MULTINET_DEVINFO_DIR,
// MULTINET_POOLS_FILE, MULTINET_LOG_DIR and MULTINET_OVS_VSCTL.
func Vhost() *vhostuser.Plugin {
	return &vhostuser.Plugin{StateDir: VhostStateDir(), DevInfo: DevInfo(), PoolsFile: PoolsFile(), LogDir: SriovLogDir(), OVSVsctl: os.Getenv(vhostuser.EnvOVSVsctl)}
}
