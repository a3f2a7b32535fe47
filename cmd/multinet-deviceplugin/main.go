// Command multinet-deviceplugin advertises a node's SR-IOV VFs, PCI network devices and
// vhost-user socket slots to kubelet, from the upstream SR-IOV device plugin's config.json.
// It is a thin shell over package deviceplugin: SIGHUP rescans and reloads, SIGTERM stops.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/multinet-io/multinet/cmd/internal/nodeenv"
	"github.com/multinet-io/multinet/deviceplugin"
	"github.com/multinet-io/multinet/devpools"
	"github.com/multinet-io/multinet/nodeevents"
	"github.com/multinet-io/multinet/pci"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("multinet-deviceplugin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := fs.String("config", "/etc/pcidp/config.json", "resource pools (upstream SR-IOV device plugin config.json format)")
	fs.StringVar(cfg, "config-file", "/etc/pcidp/config.json", "alias of --config (upstream's flag name)")
	sysfs := fs.String("sysfs-root", pci.DefaultSysfsRoot, "sysfs mount to read devices from")
	dir := fs.String("device-plugin-dir", deviceplugin.DefaultPluginDir, "kubelet's device-plugin directory (kubelet.sock and our sockets)")
	interval := fs.Duration("interval", 250*time.Millisecond, "how often sysfs, the config file and kubelet.sock are checked")
	poolsFile := fs.String("pools-file", devpools.DefaultPath, "where the pools' PCI addresses are published for the sriov CNI plugin (\"\" for nowhere)")
	check := fs.Bool("check", false, "validate the config, print the pools it selects on this node, and exit")
	verbose := fs.Bool("v", false, "debug logging")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig for posting Events on the Node about refused pools (default: in-cluster when run in a pod)")
	nodeName := fs.String("node-name", os.Getenv("NODE_NAME"), "this node's name, for those Events (default $NODE_NAME)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	if *check {
		*poolsFile = "" // a dry run publishes nothing
	}
	opts := deviceplugin.Options{ConfigFile: *cfg, SysfsRoot: *sysfs, PluginDir: *dir, Interval: *interval, Logger: log,
		PoolsFile: *poolsFile, DevInfo: nodeenv.DevInfo()}
	if !*check {
		opts.OnRefused = nodeReporter(log, *kubeconfig, *nodeName)
	}
	m, err := deviceplugin.New(opts)
	if err != nil {
		fmt.Fprintf(stderr, "multinet-deviceplugin: %v\n", err)
		return 1
	}
	if *check {
		for _, p := range m.Status() {
			fmt.Fprintf(os.Stdout, "%s: %d devices %v\n", p.Resource, len(p.Devices), p.Devices)
		}
		refused := m.Refused()
		for _, r := range refused {
			fmt.Fprintf(os.Stdout, "%s: refused: %s\n", r.Resource, r)
		}
		if len(refused) > 0 {
			return 1
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			if err := m.Reload(); err != nil {
				log.Error("reload on SIGHUP", "err", err)
			} else if err := m.Rescan(); err != nil {
				log.Error("rescan on SIGHUP", "err", err)
			}
		}
	}()
	log.Info("serving", "config", *cfg, "sysfs", *sysfs, "device-plugin-dir", *dir)
	if err := m.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "multinet-deviceplugin: %v\n", err)
		return 1
	}
	return 0
}

// nodeReporter returns the OnRefused hook that posts Events on the Node: a Warning per refused
// pool, a Normal one when a later config has none. The device plugin needs API access only for
// this; without a kubeconfig (or in-cluster credentials) and a node name, refusals are in the
// log and in --check only.
func nodeReporter(log *slog.Logger, kubeconfig, node string) func([]deviceplugin.Refusal) {
	var rc *rest.Config
	var err error
	switch {
	case node == "":
		err = errors.New("no --node-name or NODE_NAME")
	case kubeconfig != "":
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	case os.Getenv("KUBERNETES_SERVICE_HOST") != "":
		rc, err = rest.InClusterConfig()
	default:
		err = errors.New("no --kubeconfig and not in a pod")
	}
	var kube kubernetes.Interface
	if err == nil {
		kube, err = kubernetes.NewForConfig(rc)
	}
	if err != nil {
		log.Info("refused pools are reported in the log and --check only, not as Node events", "why", err)
		return nil
	}
	return deviceplugin.NodeEvents(log, &nodeevents.Recorder{Kube: kube, Node: node, Component: "multinet-deviceplugin"})
}
