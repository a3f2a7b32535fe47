// Command vhostuser is the vhost-user CNI plugin ("type": "vhostuser"), a thin CNI binary over
// package vhostuser. Environment: MULTINET_STATE_DIR (state under <dir>/vhostuser; default
// /var/lib/cni/multinet/vhostuser), MULTINET_DEVINFO_DIR, MULTINET_POOLS_FILE (where the device plugin
// publishes its pools, and a vhostUser pool's containerDir), MULTINET_OVS_VSCTL.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/multinet-io/multinet/cmd/internal/nodeenv"
)

func main() {
	skel.PluginMainFuncs(nodeenv.Vhost().CNIFuncs(), version.All, "multinet vhost-user CNI plugin")
}
