// Command multinet is the CNI meta-plugin (installed as `multinet` in the CNI bin dir), and
// `multinet config generate` writes the node's 00-multinet.conflist.
package main

import (
	"errors"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/multinet-io/multinet/cmd/internal/nodeenv"
	"github.com/multinet-io/multinet/meta"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "config" {
		os.Exit(configCmd(os.Args[2:], os.Stdout, os.Stderr))
	}
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add: func(args *skel.CmdArgs) error {
			p, err := meta.New(args.StdinData, args.Args, env())
			if err != nil {
				return err
			}
			defer p.Close()
			res, err := p.Add(args)
			if err != nil {
				return withContext(err)
			}
			return types.PrintResult(res, p.Conf.CNIVersion)
		},
		Del:    run((*meta.Plugin).Del),
		Check:  run((*meta.Plugin).Check),
		Status: run((*meta.Plugin).Status),
		GC:     run((*meta.Plugin).GC),
	}, meta.Versions, "multinet meta-plugin: cluster network on eth0, NetworkAttachmentDefinitions on net1..netN")
}

func run(f func(*meta.Plugin, *skel.CmdArgs) error) func(*skel.CmdArgs) error {
	return func(args *skel.CmdArgs) error {
		p, err := meta.New(args.StdinData, args.Args, env())
		if err != nil {
			return err
		}
		defer p.Close()
		return withContext(f(p, args))
	}
}

// env is the node settings the binary takes from its environment (it takes no flags).
func env() meta.Env {
	return meta.Env{SysfsRoot: nodeenv.SysfsRoot(), DevInfo: nodeenv.DevInfo(), Depth: nodeenv.Depth()}
}

// withContext keeps our message: skel unwraps to the innermost *types.Error, which would drop
// the pod, network and interface that say where a delegate failed.
func withContext(err error) error {
	var e *types.Error
	if err == nil || !errors.As(err, &e) || error(e) == err {
		return err
	}
	return &types.Error{Code: e.Code, Msg: err.Error()}
}

func usage() string {
	return "usage: multinet config generate [--mode thin|thick] [--socket FILE] [--agent-wait 45s] --conf-dir DIR [--kubeconfig FILE] [--cache-dir DIR] [--bin-dir DIR]\n" +
		"         [--log-dir DIR] [--log-file FILE] [--log-level LEVEL] [--namespace-isolation] [--global-namespaces a,b]\n" +
		"         [--readiness-indicator-file FILE] [--pod-resources-socket FILE]\n" +
		"       (run with CNI_COMMAND set, multinet is the CNI plugin)\n"
}
