// Command sriov is the SR-IOV CNI plugin ("type": "sriov"), a thin CNI binary over package
// sriovcni. Environment: MULTINET_SYSFS_ROOT (default /sys), MULTINET_STATE_DIR (state under
// <dir>/sriov; default /var/lib/cni/multinet/sriov), MULTINET_DEVINFO_DIR.
package main

import (
	"runtime"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/multinet-io/multinet/sriovcni"
)

// Namespace switches are per OS thread: keep main on one thread so host-side netlink calls
// stay in the host's namespace.
func init() { runtime.LockOSThread() }

func args(a *skel.CmdArgs) sriovcni.Args {
	return sriovcni.Args{ContainerID: a.ContainerID, Netns: a.Netns, IfName: a.IfName,
		Args: a.Args, Path: a.Path, StdinData: a.StdinData}
}

func main() {
	p := sriovcni.NewFromEnv()
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add: func(a *skel.CmdArgs) error {
			res, err := p.Add(args(a))
			if err != nil {
				return err
			}
			conf, err := sriovcni.LoadConf(a.StdinData, a.Args)
			if err != nil {
				return err
			}
			return types.PrintResult(res, conf.CNIVersion)
		},
		Del:    func(a *skel.CmdArgs) error { return p.Del(args(a)) },
		Check:  func(a *skel.CmdArgs) error { return p.Check(args(a)) },
		GC:     func(a *skel.CmdArgs) error { return p.GC(args(a)) },
		Status: func(a *skel.CmdArgs) error { return p.Status(args(a)) },
	}, version.All, "multinet sriov CNI plugin")
}
