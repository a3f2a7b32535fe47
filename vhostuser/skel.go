package vhostuser

import (
	"encoding/json"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
)

// CNIFuncs adapts the plugin to skel for the CNI binary.
func (p *Plugin) CNIFuncs() skel.CNIFuncs {
	args := func(a *skel.CmdArgs) Args {
		return Args{ContainerID: a.ContainerID, Netns: a.Netns, IfName: a.IfName, Args: a.Args, StdinData: a.StdinData}
	}
	return skel.CNIFuncs{
		Add: func(a *skel.CmdArgs) error {
			res, err := p.Add(args(a))
			if err != nil {
				return err
			}
			var v struct {
				CNIVersion string `json:"cniVersion"`
			}
			_ = json.Unmarshal(a.StdinData, &v)
			return types.PrintResult(res, v.CNIVersion)
		},
		Del:    func(a *skel.CmdArgs) error { return p.Del(args(a)) },
		Check:  func(a *skel.CmdArgs) error { return p.Check(args(a)) },
		GC:     func(a *skel.CmdArgs) error { return p.GC(args(a)) },
		Status: func(a *skel.CmdArgs) error { return p.Status(args(a)) },
	}
}
