// Command multinet-bench measures pod attach/detach latency of multinet and upstream Multus
// side by side on one simulated node (see benchmarks/ and `make bench`). Run as root: it works
// in its own network and mount namespaces. With --pf it measures instead on a real node's PF:
// its free VFs as they are (netdev and vfio-pci), each put back as found afterwards.
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/multinet-io/multinet/benchmarks"
	"github.com/multinet-io/multinet/podresources"
)

func main() {
	var o benchmarks.Options
	var out string
	var keep, verbose bool
	var pf, sysfsRoot, checkpoint string
	flag.StringVar(&pf, "pf", "", "measure on this real PF's VFs (its netdev) instead of a simulated node; run it on a node with no SR-IOV pods")
	flag.StringVar(&sysfsRoot, "sysfs-root", "/sys", "sysfs root (with --pf)")
	flag.StringVar(&checkpoint, "kubelet-checkpoint", podresources.DefaultCheckpoint, "with --pf: VFs this kubelet device checkpoint gives a pod are left alone")
	flag.StringVar(&o.BinDir, "bin-dir", "bin", "dir with the multinet and sriov binaries")
	flag.StringVar(&o.WrapBin, "wrap", "bin/bench/wrap", "delegate timing wrapper binary")
	flag.StringVar(&o.MultusBin, "multus", "", "upstream multus binary (empty: multinet only)")
	flag.StringVar(&o.MultusDaemonBin, "multus-daemon", "", "upstream multus-daemon binary (thick mode; empty: no multus-thick stack)")
	flag.StringVar(&o.MultusShimBin, "multus-shim", "", "upstream multus-shim binary (thick mode)")
	flag.BoolVar(&o.NoThick, "no-thick", false, "skip the thick stacks (multinet-thick: bin-dir's multinetd + multinet-shim; multus-thick)")
	flag.BoolVar(&o.Scale, "scale", false, "after the scenarios: 5,000 pods on other nodes and 2,000 NADs into the API server, the thick daemons' RSS before and after")
	flag.StringVar(&o.RefPlugins, "ref-plugins", "/usr/lib/cni", "reference CNI plugins dir")
	flag.StringVar(&o.ToolsDir, "tools", "", "dir with etcd and kube-apiserver (e2e/cluster/build-tools.sh)")
	flag.StringVar(&o.CRDDir, "crds", "deploy/crds", "CRD manifests")
	flag.IntVar(&o.Cycles, "cycles", 24, "pod cycles per sequential scenario and stack")
	flag.IntVar(&o.Rounds, "rounds", 3, "rounds of the concurrent scenario per stack")
	flag.IntVar(&o.ShareCycles, "share-cycles", 8, "cycles of the wrapped pass measuring the meta-plugin's own share")
	flag.BoolVar(&o.MultusClusterNetworkPath, "multus-cluster-network-path", false, "configure Multus with clusterNetwork = the bridge conflist's path (default: its thin_entrypoint's inline delegate)")
	flag.Func("stacks", "comma-separated stacks to run (default all: multinet, multus, multinet-thick, multus-thick; the floor always runs)", func(v string) error {
		o.Stacks = strings.Split(v, ",")
		return nil
	})
	flag.StringVar(&o.Only, "only", "", "run only this scenario (herd200: 200 eth0 pods at once on the thick stacks, only when named)")
	flag.StringVar(&o.MultusVersion, "multus-version", "v4.3.0", "for the report")
	flag.StringVar(&o.MultinetVersion, "multinet-version", "", "for the report (git describe)")
	flag.StringVar(&o.K8sVersion, "k8s-version", "v1.34.4", "for the report")
	flag.StringVar(&o.EtcdVersion, "etcd-version", "v3.5.21", "for the report")
	flag.StringVar(&out, "out", "benchmarks/out/latest.json", "JSON report")
	flag.BoolVar(&keep, "keep", false, "keep the scratch dir (logs, caches)")
	flag.BoolVar(&verbose, "v", false, "debug logs")
	flag.Parse()
	if pf != "" {
		os.Exit(runPF(pf, sysfsRoot, checkpoint, o, out, verbose))
	}

	code, err := benchmarks.Isolate()
	if err != nil {
		fmt.Fprintln(os.Stderr, "multinet-bench:", err)
	}
	if code >= 0 {
		os.Exit(code)
	}
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	o.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	for _, p := range []*string{&o.BinDir, &o.WrapBin, &o.MultusBin, &o.MultusDaemonBin, &o.MultusShimBin, &o.ToolsDir, &o.CRDDir, &out} {
		if *p != "" {
			*p, _ = filepath.Abs(*p)
		}
	}
	dir, err := os.MkdirTemp("", "multinet-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "multinet-bench:", err)
		os.Exit(1)
	}
	o.Dir = dir
	rep, err := benchmarks.Run(o)
	if !keep {
		os.RemoveAll(dir)
	} else {
		o.Log.Info("scratch dir kept", "dir", dir)
	}
	if rep != nil {
		rep.Table(os.Stdout)
		os.MkdirAll(filepath.Dir(out), 0o755)
		if werr := rep.WriteJSON(out); werr != nil {
			fmt.Fprintln(os.Stderr, "multinet-bench:", werr)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "multinet-bench:", err)
		os.Exit(1)
	}
}

// runPF is --pf: in the host's namespaces (the PF and its VFs live there), the plugin's state in
// a scratch dir.
func runPF(pf, sysfsRoot, checkpoint string, o benchmarks.Options, out string, verbose bool) int {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	binDir, _ := filepath.Abs(o.BinDir)
	dir, err := os.MkdirTemp("", "multinet-bench-pf-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "multinet-bench:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	rep, err := benchmarks.RunPF(benchmarks.PFOptions{PF: pf, SysfsRoot: sysfsRoot, BinDir: binDir, Dir: dir,
		Cycles: o.Cycles, Checkpoint: checkpoint, Log: log, Version: o.MultinetVersion})
	if rep != nil {
		rep.Table(os.Stdout)
		os.MkdirAll(filepath.Dir(out), 0o755)
		if werr := rep.WriteJSON(out); werr != nil {
			fmt.Fprintln(os.Stderr, "multinet-bench:", werr)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "multinet-bench:", err)
		return 1
	}
	return 0
}
