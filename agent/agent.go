// Package agent is the node agent multinetd: one process per node that serves the thick-mode
// shim's CNI calls over a unix socket with the meta-plugin in-process (pods and NADs from
// informers, the sriov delegate in-process), and exposes metrics and health. It composes the
// packages that do the work; it owns only the wiring: one place that starts every part and
// stops them together.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	nadclient "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/clientset/versioned"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/client-go/kubernetes"

	"github.com/multinet-io/multinet/cniinstall"
	"github.com/multinet-io/multinet/deviceplugin"
	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/internal/cniwire"
	"github.com/multinet-io/multinet/meta"
	"github.com/multinet-io/multinet/meta/delcache"
	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/sriovcni"
)

// Config is the agent's configuration, as values (cmd/multinetd reads flags and env).
type Config struct {
	// Socket is the CNI server's unix socket (cniwire.DefaultSocket when ""); its directory is
	// created 0700 and must not be reachable by anyone but root.
	Socket string
	// NodeName selects the pods the agent caches (spec.nodeName); required with Kube.
	NodeName string
	// Kube and NADs are the agent's API clients (one kept-alive connection for every request);
	// nil: no API, only confs in standalone mode (networkDir) or with static delegates.
	Kube kubernetes.Interface
	NADs nadclient.Interface
	// MetricsAddr serves /metrics, /healthz and /readyz ("": off).
	MetricsAddr string
	// MaxParallel bounds the calls served at once; the rest wait in a queue (default 16).
	MaxParallel int
	// RequestTimeout bounds one CNI call (default 2 min, the thin binary's).
	RequestTimeout time.Duration
	// GetTimeout bounds a live GET for a pod or NAD the caches do not have (default 5 s).
	GetTimeout time.Duration
	// SyncTimeout is how long the start waits for the caches before serving anyway, with
	// live GETs for what is missing (default 30 s).
	SyncTimeout time.Duration
	// ShutdownTimeout is how long SIGTERM lets calls in flight finish (default 30 s).
	ShutdownTimeout time.Duration
	SysfsRoot       string
	// DevInfo is the device-info root the meta-plugin reads ("": devinfo.DefaultBase).
	DevInfo devinfo.Dir
	// Sriov runs the sriov delegate in-process; nil: the sriov binary is exec'd like others.
	Sriov *sriovcni.Plugin
	// DevicePlugin runs the kubelet device plugin (package deviceplugin, its config file and
	// options) in the agent; nil: off.
	DevicePlugin *deviceplugin.Options
	// VFPolicyFile is the VF node policy (the `multinetctl vf apply` format), applied at start
	// and whenever its content changes, looked at every VFPolicyInterval (default 5 s); "": off.
	VFPolicyFile     string
	VFPolicyInterval time.Duration
	// Install installs multinet on the node (binaries, conf, thin kubeconfig) and removes the
	// conf on an uninstall; nil: the node is set up by other means. /readyz waits for it.
	// Its Kube and Log default to the agent's.
	Install *cniinstall.Config
	// NoCNIServer runs no CNI socket (a thin-mode DaemonSet: it installs, hosts the device
	// plugin and the VF policy, and waits for SIGTERM); pod and NAD informers are not started.
	NoCNIServer bool
	// DelegateChroot execs delegate plugins chrooted to this dir (the host's / mounted in the
	// pod): the node's plugins may be dynamically linked against the host's libc; plugin
	// paths are looked up under it. "": exec in the agent's own root.
	DelegateChroot string
	Log            *slog.Logger
}

// Agent is one running node agent.
type Agent struct {
	cfg        Config
	log        *slog.Logger
	metrics    *metrics
	exec       *execer
	sys        *pci.SysFS
	hostViews  *meta.HostViews // nil: the policy reads the host per ADD
	nets       *informerNets
	startNets  func(stop <-chan struct{})
	install    *cniinstall.Installer
	serving    chan struct{} // closed once the CNI socket listens (the thick conf waits for it)
	containers keyedMutex
	gc         sync.RWMutex
	workers    chan struct{}

	mu    sync.Mutex
	ready bool
}

// New checks the configuration and builds the agent; Run starts it.
func New(cfg Config) (*Agent, error) {
	if cfg.Socket == "" {
		cfg.Socket = cniwire.DefaultSocket
	}
	if cfg.MaxParallel <= 0 {
		cfg.MaxParallel = 16
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 2 * time.Minute
	}
	if cfg.GetTimeout <= 0 {
		cfg.GetTimeout = 5 * time.Second
	}
	if cfg.SyncTimeout <= 0 {
		cfg.SyncTimeout = 30 * time.Second
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	if cfg.VFPolicyInterval <= 0 {
		cfg.VFPolicyInterval = 5 * time.Second
	}
	if cfg.SysfsRoot == "" {
		cfg.SysfsRoot = pci.DefaultSysfsRoot
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	if !cfg.NoCNIServer && (cfg.Kube == nil) != (cfg.NADs == nil) {
		return nil, errors.New("multinetd: the pod client and the NAD client go together")
	}
	if !cfg.NoCNIServer && cfg.Kube != nil && cfg.NodeName == "" {
		return nil, errors.New("multinetd: node name is required (--node-name or NODE_NAME): the agent caches this node's pods only")
	}
	a := &Agent{cfg: cfg, log: cfg.Log.With("component", "multinetd"), metrics: newMetrics(),
		sys: pci.New(cfg.SysfsRoot), workers: make(chan struct{}, cfg.MaxParallel)}
	raw := delcache.DefaultExec()
	if cfg.DelegateChroot != "" {
		if !filepath.IsAbs(cfg.DelegateChroot) {
			return nil, fmt.Errorf("multinetd: delegate chroot %q: want an absolute path", cfg.DelegateChroot)
		}
		raw = &chrootExec{root: cfg.DelegateChroot, stderr: os.Stderr}
	}
	a.exec = &execer{raw: raw, sriov: cfg.Sriov, metrics: a.metrics}
	if cfg.Install != nil {
		ic := *cfg.Install
		if ic.Kube == nil {
			ic.Kube = cfg.Kube
		}
		if ic.Log == nil {
			ic.Log = a.log
		}
		if ic.Conf == meta.ModeThick && ic.Socket == "" {
			ic.Socket = cfg.Socket
		}
		if ic.Conf == meta.ModeThick && !cfg.NoCNIServer && ic.ConfAfter == nil {
			a.serving = make(chan struct{})
			ic.ConfAfter = a.serving
		}
		var err error
		if a.install, err = cniinstall.New(ic); err != nil {
			return nil, err
		}
	}
	if cfg.Kube != nil && !cfg.NoCNIServer {
		a.nets, a.startNets = newInformerNets(cfg.Kube, cfg.NADs, cfg.NodeName, cfg.GetTimeout)
	}
	return a, nil
}

// Run serves until ctx is cancelled, then stops accepting, lets the calls in flight finish
// (bounded by ShutdownTimeout) and returns. The node's CNI conf is kept: a restart or an
// upgrade leaves the node with multinet, the shim waiting for the agent meanwhile; only an
// uninstall (Install, the pod's DaemonSet gone) removes it.
func (a *Agent) Run(ctx context.Context) error {
	stop := make(chan struct{})
	defer close(stop)
	if s := a.cfg.Sriov; s != nil && s.NL == nil {
		// One netlink handle on the host's namespace (Run's, before any request ran) for every
		// in-process sriov call, instead of a socket and a VF dump request per call.
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return fmt.Errorf("multinetd: netlink: %w", err)
		}
		defer h.Close()
		kept := *s
		kept.NL = h
		a.exec.sriov = &kept
	}
	nodeCtx, stopNode := context.WithCancel(ctx)
	waitNode, err := a.runNode(nodeCtx)
	if err != nil {
		stopNode()
		return err
	}
	defer func() { stopNode(); waitNode() }()
	if a.install != nil {
		// It runs under ctx: a SIGTERM makes it decide restart or uninstall while the calls in
		// flight drain; Run returns after both.
		instCtx, stopInst := context.WithCancel(ctx) // an error return stops it too
		done := make(chan struct{})
		go func() { defer close(done); a.install.Run(instCtx) }()
		defer func() { stopInst(); <-done }()
	}
	var httpSrv *http.Server
	if a.cfg.MetricsAddr != "" {
		l, err := net.Listen("tcp", a.cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("multinetd: metrics address: %w", err)
		}
		httpSrv = &http.Server{Handler: a.httpHandler(), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = httpSrv.Serve(l) }()
		defer httpSrv.Close()
	}
	if a.cfg.NoCNIServer {
		a.setReady(true)
		a.log.Info("not serving CNI (--serve-cni=false): installing and hosting the node parts only")
		<-ctx.Done()
		return nil
	}
	// The policy's host view, kept until the host's links, addresses or routes change (Run
	// runs in the node's namespace). Without the subscription every ADD reads the host.
	if hv, err := meta.NewHostViews(); err != nil {
		a.log.Warn("reading the host's links on every ADD", "err", err)
	} else {
		a.hostViews = hv
		defer hv.Close()
	}
	if a.nets != nil {
		a.startNets(stop)
		syncCtx, cancel := context.WithTimeout(ctx, a.cfg.SyncTimeout)
		for !a.nets.hasSynced() && syncCtx.Err() == nil {
			select {
			case <-syncCtx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if !a.nets.hasSynced() {
			a.log.Warn("caches not synced yet, serving with live GETs for what they miss", "waited", a.cfg.SyncTimeout.String())
		}
	}
	l, err := listen(a.cfg.Socket)
	if err != nil {
		return err
	}
	a.setReady(true)
	if a.serving != nil {
		close(a.serving)
	}
	a.log.Info("serving CNI", "socket", a.cfg.Socket, "maxParallel", a.cfg.MaxParallel, "sriovInProcess", a.cfg.Sriov != nil, "api", a.nets != nil)

	// Calls run under reqCtx: not cancelled by SIGTERM itself, only when the drain time is up.
	reqCtx, cancelReqs := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelReqs()
	var wg sync.WaitGroup
	go func() {
		<-ctx.Done()
		a.setReady(false)
		l.Close()
	}()
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			a.log.Error("accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.serveConn(reqCtx, c)
		}()
	}
	_ = os.Remove(a.cfg.Socket)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		a.log.Info("stopped: every call in flight finished")
	case <-time.After(a.cfg.ShutdownTimeout):
		a.log.Error("stopping with calls in flight: cancelling them (the runtime retries, DEL works from the cache)", "waited", a.cfg.ShutdownTimeout.String())
		cancelReqs()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	}
	return nil
}

func (a *Agent) setReady(v bool) {
	a.mu.Lock()
	a.ready = v
	a.mu.Unlock()
}

func (a *Agent) isReady() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ready && (a.nets == nil || a.nets.hasSynced()) && (a.install == nil || a.install.Ready())
}

func (a *Agent) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.isReady() {
			http.Error(w, "not ready: caches syncing, not serving, or multinet not installed yet", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// listen opens the CNI socket: its directory 0700 (created so, or refused when others can
// enter it), a stale socket of a dead agent replaced, a live agent's left alone.
func listen(path string) (*net.UnixListener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("multinetd: socket dir: %w", err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("multinetd: socket dir: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("multinetd: socket dir %s is mode %o: want 0700, only root may reach the socket", dir, st.Mode().Perm())
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("multinetd: %s: another agent is serving it", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("multinetd: remove stale socket: %w", err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("multinetd: listen: %w", err)
	}
	l.SetUnlinkOnClose(false) // Run removes it, after the last accept
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("multinetd: socket: %w", err)
	}
	return l, nil
}
