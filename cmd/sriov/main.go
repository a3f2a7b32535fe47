// Command sriov is the SR-IOV CNI plugin ("type": "sriov"), a thin CNI binary over package
// sriovcni. Environment: MULTINET_SYSFS_ROOT (default /sys), MULTINET_STATE_DIR (state under
// <dir>/sriov; default /var/lib/cni/multinet/sriov), MULTINET_DEVINFO_DIR, MULTINET_POOLS_FILE (the
// device plugin's published pools; default /var/lib/multinet/deviceplugin/pools.json),
// MULTINET_SRIOV_POOL_CHECK (auto, require or off; default auto) and MULTINET_KUBELET_CHECKPOINT.
package main

import (
	"runtime"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/multinet-io/multinet/cmd/internal/nodeenv"
)

// Namespace switches are per OS thread: keep main on one thread so host-side netlink calls
// stay in the host's namespace.
func init() { runtime.LockOSThread() }

func main() {
	skel.PluginMainFuncs(nodeenv.Sriov().CNIFuncs(), version.All, "multinet sriov CNI plugin")
}
