// Command multinetd is the multinet node agent (thick mode): it serves the multinet-shim's CNI
// calls over a unix socket with the meta-plugin and the sriov plugin in-process. Flags and
// signals only; the work is package agent's.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	nadclient "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/clientset/versioned"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/multinet-io/multinet/agent"
	"github.com/multinet-io/multinet/cmd/internal/nodeenv"
	"github.com/multinet-io/multinet/cniinstall"
	"github.com/multinet-io/multinet/deviceplugin"
	"github.com/multinet-io/multinet/internal/cniwire"
	"github.com/multinet-io/multinet/meta"
	"github.com/multinet-io/multinet/meta/delcache"
	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/podresources"
	"github.com/multinet-io/multinet/sriovcni"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func run(argv []string) error {
	fs := flag.NewFlagSet("multinetd", flag.ContinueOnError)
	socket := fs.String("socket", cniwire.DefaultSocket, "CNI server's unix socket (0600, in a 0700 dir)")
	node := fs.String("node-name", os.Getenv("NODE_NAME"), "this node's name: only its pods are cached (env NODE_NAME)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the agent's API client (\"\": in-cluster config)")
	noAPI := fs.Bool("no-api", false, "run without an API server (standalone confs with networkDir or static delegates only)")
	metricsAddr := fs.String("metrics-addr", "127.0.0.1:9109", "address of /metrics, /healthz and /readyz (\"\": off)")
	maxParallel := fs.Int("max-parallel", 16, "CNI calls served at once; the rest wait in a queue")
	reqTimeout := fs.Duration("request-timeout", 2*time.Minute, "bound of one CNI call")
	shutdown := fs.Duration("shutdown-timeout", 30*time.Second, "on SIGTERM, how long calls in flight may finish")
	syncTimeout := fs.Duration("sync-timeout", 30*time.Second, "how long the start waits for the pod and NAD caches")
	sysfs := fs.String("sysfs-root", envOr(pci.EnvSysfsRoot, pci.DefaultSysfsRoot), "sysfs root (env "+pci.EnvSysfsRoot+")")
	sriovInProc := fs.Bool("sriov-in-process", true, "run the sriov delegate in-process (false: exec the sriov binary)")
	stateDir := fs.String("sriov-state-dir", nodeenv.SriovStateDir(), "sriov plugin state dir (the sriov binary's, shared with it)")
	poolsFile := fs.String("pools-file", nodeenv.PoolsFile(), "device plugin's published pools")
	poolCheck := fs.String("sriov-pool-check", os.Getenv(sriovcni.EnvPoolCheck), "sriov pool check: auto, require or off")
	checkpoint := fs.String("kubelet-checkpoint", envOr(sriovcni.EnvCheckpoint, podresources.DefaultCheckpoint), "kubelet device-manager checkpoint")
	logDir := fs.String("log-dir", envOr(sriovcni.EnvLogDir, sriovcni.DefaultLogDir), "the only dir a sriov netconf's logFile may name")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	dpConfig := fs.String("device-plugin-config", "", "run the device plugin in the agent with this config.json (upstream SR-IOV device plugin format; \"\": off)")
	dpDir := fs.String("device-plugin-dir", deviceplugin.DefaultPluginDir, "kubelet's device-plugin directory")
	dpInterval := fs.Duration("device-plugin-interval", 250*time.Millisecond, "how often the device plugin looks at sysfs, its config and kubelet.sock")
	vfPolicy := fs.String("vf-policy", "", "VF node policy (multinetctl vf apply format), applied at start and on every change (\"\": off)")
	vfInterval := fs.Duration("vf-policy-interval", 5*time.Second, "how often the VF policy file is looked at")
	installFrom := fs.String("install-from", "", "install every executable of this dir (the image's /opt/multinet/bin) into --cni-bin-dir: temp file + rename, so running plugins keep running (\"\": none)")
	binDir := fs.String("cni-bin-dir", delcache.DefaultBinDir, "the node's CNI bin dir")
	confDir := fs.String("cni-conf-dir", meta.DefaultConfDir, "the node's CNI conf dir")
	installConf := fs.String("install-conf", cniinstall.ModeNone, "write "+meta.OwnConfName+" wrapping the cluster network's conf once it exists: thick (type multinet-shim, this agent's --socket), thin (type multinet, with --thin-kubeconfig) or none")
	thinKubeconfig := fs.String("thin-kubeconfig", "", "thin conf: the kubeconfig written for the plugin from this pod's service account, refreshed as the token rotates (default <cni-conf-dir>/multinet.d/multinet.kubeconfig; same path on the host)")
	thinServer := fs.String("thin-api-server", "", "thin conf: the API server URL in its kubeconfig (default https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT; set it where the host cannot reach the service IP, no kube-proxy)")
	saDir := fs.String("service-account-dir", cniinstall.DefaultServiceAccountDir, "thin conf: the pod's service-account token and ca.crt")
	installInterval := fs.Duration("install-interval", time.Second, "how often the conf dir and the token are looked at")
	serveCNI := fs.Bool("serve-cni", true, "serve the CNI socket (false: a thin-mode DaemonSet that installs and hosts the device plugin and VF policy only)")
	delegateChroot := fs.String("delegate-chroot", "", "exec delegate plugins chrooted to this dir (the host's / mounted in the pod, e.g. /hostroot); \"\": in the agent's root")
	if err := fs.Parse(argv); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(strings.ToUpper(*logLevel))); err != nil {
		return fmt.Errorf("--log-level %q: %w", *logLevel, err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg := agent.Config{Socket: *socket, NodeName: *node, MetricsAddr: *metricsAddr, MaxParallel: *maxParallel,
		RequestTimeout: *reqTimeout, ShutdownTimeout: *shutdown, SyncTimeout: *syncTimeout, SysfsRoot: *sysfs, Log: log,
		VFPolicyFile: *vfPolicy, VFPolicyInterval: *vfInterval, DevInfo: nodeenv.DevInfo(), NoCNIServer: !*serveCNI,
		DelegateChroot: *delegateChroot}
	if *installFrom != "" || *installConf != cniinstall.ModeNone {
		ic := &cniinstall.Config{From: *installFrom, BinDir: *binDir, ConfDir: *confDir, Conf: *installConf,
			Kubeconfig: *thinKubeconfig, ServiceAccountDir: *saDir, Interval: *installInterval,
			// Downward API: who this pod is, to tell an uninstall (its DaemonSet gone) from a restart.
			PodNamespace: os.Getenv("POD_NAMESPACE"), PodName: os.Getenv("POD_NAME")}
		if h := os.Getenv("KUBERNETES_SERVICE_HOST"); h != "" {
			ic.APIServer = cniinstall.APIServerURL(h, envOr("KUBERNETES_SERVICE_PORT", "443"))
		}
		if *thinServer != "" {
			ic.APIServer = *thinServer
		}
		cfg.Install = ic
	}
	if *dpConfig != "" {
		cfg.DevicePlugin = &deviceplugin.Options{ConfigFile: *dpConfig, SysfsRoot: *sysfs, PluginDir: *dpDir, Interval: *dpInterval,
			PoolsFile: *poolsFile, DevInfo: cfg.DevInfo, Logger: log.With("part", "deviceplugin")}
	}
	if *sriovInProc {
		cfg.Sriov = &sriovcni.Plugin{Sys: pci.New(*sysfs), StateDir: *stateDir, PoolsFile: *poolsFile, PoolCheck: *poolCheck,
			Checkpoint: *checkpoint, LogDir: *logDir, DevInfo: cfg.DevInfo, Log: log.With("plugin", "sriov")}
	}
	if !*noAPI {
		rc, err := restConfig(*kubeconfig)
		if err != nil {
			return err
		}
		if cfg.Kube, err = kubernetes.NewForConfig(rc); err != nil {
			return fmt.Errorf("kubeconfig: %w", err)
		}
		if cfg.NADs, err = nadclient.NewForConfig(rc); err != nil {
			return fmt.Errorf("kubeconfig: %w", err)
		}
	}
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return a.Run(ctx)
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	var rc *rest.Config
	var err error
	if kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
		if errors.Is(err, rest.ErrNotInCluster) {
			err = fmt.Errorf("no --kubeconfig and not in a pod: %w (or run with --no-api)", err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("API client: %w", err)
	}
	rc.UserAgent = "multinetd"
	// One agent serves every pod of the node: client-go's default 5 QPS would queue a herd.
	rc.QPS, rc.Burst = 50, 100
	return rc, nil
}
