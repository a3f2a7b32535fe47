package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/multinet-io/multinet/meta"
)

func configCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "generate" {
		fmt.Fprint(stderr, usage())
		return 2
	}
	fs := flag.NewFlagSet("multinet config generate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o meta.GenerateOptions
	var global, policy string
	fs.StringVar(&o.Mode, "mode", meta.ModeThin, "thin (the conf runs multinet) or thick (it runs multinet-shim, which asks multinetd)")
	fs.StringVar(&o.Socket, "socket", "", "thick mode: multinetd's socket (default /run/multinet/multinet.sock)")
	fs.StringVar(&o.AgentWait, "agent-wait", "", "thick mode: how long ADD waits for multinetd (default 45s)")
	fs.StringVar(&o.ConfDir, "conf-dir", meta.DefaultConfDir, "CNI conf dir holding the cluster network's conf")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig the plugin uses to read NADs and pods")
	fs.StringVar(&o.CacheDir, "cache-dir", "", "delegate cache dir (default "+meta.DefaultCacheDir+")")
	fs.StringVar(&o.BinDir, "bin-dir", "", "CNI bin dir(s) for delegates (default: the runtime's CNI_PATH)")
	fs.StringVar(&o.LogDir, "log-dir", "", "the only dir log files may be in (default "+meta.DefaultLogDir+")")
	fs.StringVar(&o.LogFile, "log-file", "", "log file, relative to --log-dir or inside it (default stderr)")
	fs.StringVar(&o.LogLevel, "log-level", "", "debug, info, warning or error")
	fs.BoolVar(&o.NamespaceIsolation, "namespace-isolation", false, "pods use only NADs of their namespace and the global ones")
	fs.StringVar(&global, "global-namespaces", "", "comma-separated namespaces whose NADs every pod may use")
	fs.StringVar(&o.ReadinessIndicatorFile, "readiness-indicator-file", "", "ADD waits (45 s at most) until this file exists")
	fs.StringVar(&o.AuxiliaryCNIChainName, "auxiliary-cni-chain-name", "", "run the plugins in <conf dir>/NAME/*.conf as an extra chain for every pod")
	fs.StringVar(&o.PodResourcesSocket, "pod-resources-socket", "", "kubelet PodResources socket (default "+meta.DefaultPodResourcesSocket+")")
	fs.StringVar(&policy, "policy", "", "JSON file with the meta-plugin's policy (what NADs may do to the node)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if policy != "" {
		b, err := os.ReadFile(policy)
		if err != nil {
			fmt.Fprintf(stderr, "multinet config generate: %v\n", err)
			return 1
		}
		o.Policy = b
	}
	if global != "" {
		o.GlobalNamespaces = strings.Split(global, ",")
	}
	path, changed, err := meta.Generate(o)
	if err != nil {
		fmt.Fprintf(stderr, "multinet config generate: %v\n", err)
		return 1
	}
	if changed {
		fmt.Fprintf(stdout, "wrote %s\n", path)
	} else {
		fmt.Fprintf(stdout, "%s: no change\n", path)
	}
	return 0
}
