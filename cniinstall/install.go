// Package cniinstall puts multinet on a node from the agent's DaemonSet pod: the CNI binaries
// into the node's CNI bin dir, 00-multinet.conflist (meta.Generate's, thick or thin) into its
// conf dir once the cluster network's conf is there, and for thin mode a kubeconfig from the
// pod's service account, kept fresh as the token rotates. A stop keeps all of it (a restart or
// an upgrade never leaves the node without multinet) unless the pod's DaemonSet is gone: then
// the conf and kubeconfig go, so new pods start on the cluster network alone.
package cniinstall

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"

	"github.com/multinet-io/multinet/internal/cniwire"
	"github.com/multinet-io/multinet/internal/fsutil"
	"github.com/multinet-io/multinet/meta"
	"github.com/multinet-io/multinet/meta/delcache"
)

// ModeNone installs no conf (binaries only, or nothing).
const ModeNone = "none"

// Config is what to install, as values (cmd/multinetd reads flags and env).
type Config struct {
	// From is the dir whose regular executables are installed into BinDir ("": none).
	From string
	// BinDir is the node's CNI bin dir (delcache.DefaultBinDir when "").
	BinDir string
	// ConfDir is the node's CNI conf dir (meta.DefaultConfDir when "").
	ConfDir string
	// Conf is ModeNone (or ""), meta.ModeThick or meta.ModeThin.
	Conf string
	// Socket (thick) is the agent's socket the shim dials; written in the conf unless the default.
	Socket string
	// Kubeconfig (thin) is the file written for the thin plugin (default
	// <ConfDir>/multinet.d/multinet.kubeconfig); the conf names it, so the path must be the
	// same on the host as in the pod (mount the conf dir at its host path).
	Kubeconfig string
	// APIServer (thin) is the kubeconfig's server, https://host:port (from the pod's
	// KUBERNETES_SERVICE_HOST/PORT); ServiceAccountDir holds token and ca.crt
	// (DefaultServiceAccountDir when "").
	APIServer         string
	ServiceAccountDir string
	// Generate holds the conf's further settings (log level, policy, ...); Mode, ConfDir,
	// Socket, Kubeconfig and BinDir are set from the fields above.
	Generate meta.GenerateOptions
	// ConfAfter holds the conf back until it is closed (the agent serves its socket: a thick
	// conf written before would make the first pods' shims wait for it); nil: no wait.
	// Binaries and the thin kubeconfig do not wait.
	ConfAfter <-chan struct{}
	// Interval is how often the conf dir and the token are looked at (default 1 s).
	Interval time.Duration
	// Kube, PodNamespace and PodName identify this agent's pod for the uninstall decision;
	// with any of them missing a stop always keeps the conf.
	Kube         kubernetes.Interface
	PodNamespace string
	PodName      string
	// UninstallTimeout bounds the API check at stop (default 10 s); on no answer the conf is kept.
	UninstallTimeout time.Duration
	Log              *slog.Logger
}

// Installer installs and keeps the node's multinet files; Run drives it.
type Installer struct {
	cfg Config
	log *slog.Logger

	binsDone bool
	owner    *owner
	accessOK bool   // the pod and its DaemonSet could be read (so a later refusal means revoked)
	lastMsg  string // the last waiting/failure message logged, so a poll does not repeat it

	mu    sync.Mutex
	ready bool
}

// APIServerURL is the https URL of host and port (an IPv6 host bracketed).
func APIServerURL(host, port string) string {
	return "https://" + net.JoinHostPort(host, port)
}

// New checks the configuration.
func New(cfg Config) (*Installer, error) {
	if cfg.BinDir == "" {
		cfg.BinDir = delcache.DefaultBinDir
	}
	if cfg.ConfDir == "" {
		cfg.ConfDir = meta.DefaultConfDir
	}
	if cfg.ServiceAccountDir == "" {
		cfg.ServiceAccountDir = DefaultServiceAccountDir
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.UninstallTimeout <= 0 {
		cfg.UninstallTimeout = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	switch cfg.Conf {
	case "", ModeNone:
		cfg.Conf = ModeNone
	case meta.ModeThick:
	case meta.ModeThin:
		if cfg.Kubeconfig == "" {
			cfg.Kubeconfig = filepath.Join(cfg.ConfDir, "multinet.d", "multinet.kubeconfig")
		}
		if cfg.APIServer == "" {
			return nil, errors.New("install: a thin conf needs the API server for its kubeconfig (KUBERNETES_SERVICE_HOST/PORT: run in a pod)")
		}
	default:
		return nil, fmt.Errorf("install: conf %q: want %s, %s or %s", cfg.Conf, meta.ModeThick, meta.ModeThin, ModeNone)
	}
	if !filepath.IsAbs(cfg.ConfDir) || !filepath.IsAbs(cfg.BinDir) {
		return nil, fmt.Errorf("install: conf dir %q and bin dir %q must be absolute: the conf names them to the runtime", cfg.ConfDir, cfg.BinDir)
	}
	return &Installer{cfg: cfg, log: cfg.Log.With("part", "cniinstall")}, nil
}

// ConfPath is the conf the installer writes.
func (in *Installer) ConfPath() string { return filepath.Join(in.cfg.ConfDir, meta.OwnConfName) }

// Ready tells whether everything configured is installed: the binaries, and the conf (with its
// kubeconfig) wrapping a cluster network that is there.
func (in *Installer) Ready() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.ready
}

func (in *Installer) setReady(v bool) {
	in.mu.Lock()
	in.ready = v
	in.mu.Unlock()
}

// Run installs, then looks every Interval for what changed (polling: the conf dir and the
// projected token are symlink-swapped or rewritten by other tools, and a 1 s readdir plus a
// few small reads cost nothing next to missing an inotify event) until ctx ends. At the end it
// decides between a restart and an uninstall (see Stop).
func (in *Installer) Run(ctx context.Context) {
	in.step(ctx)
	t := time.NewTicker(in.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			in.stop(context.WithoutCancel(ctx))
			return
		case <-t.C:
			in.step(ctx)
		}
	}
}

// note logs msg once until another message replaces it.
func (in *Installer) note(level slog.Level, msg string, args ...any) {
	key := fmt.Sprint(append([]any{msg}, args...)...)
	if key == in.lastMsg {
		return
	}
	in.lastMsg = key
	in.log.Log(context.Background(), level, msg, args...)
}

func (in *Installer) step(ctx context.Context) {
	ok := in.stepErr(ctx)
	in.setReady(ok)
}

func (in *Installer) stepErr(ctx context.Context) bool {
	if in.cfg.From != "" && !in.binsDone {
		written, err := InstallBinaries(in.cfg.From, in.cfg.BinDir)
		if err != nil {
			in.note(slog.LevelError, "install binaries failed, retrying", "from", in.cfg.From, "binDir", in.cfg.BinDir, "written", written, "err", err)
			return false
		}
		in.binsDone = true
		in.log.Info("binaries installed", "from", in.cfg.From, "binDir", in.cfg.BinDir, "written", written)
	}
	in.learnOwner(ctx)
	if in.cfg.Conf == ModeNone {
		return true
	}
	o := in.cfg.Generate
	o.Mode, o.ConfDir = in.cfg.Conf, in.cfg.ConfDir
	if in.cfg.BinDir != delcache.DefaultBinDir {
		o.BinDir = in.cfg.BinDir
	}
	switch in.cfg.Conf {
	case meta.ModeThick:
		if in.cfg.Socket != "" && in.cfg.Socket != cniwire.DefaultSocket {
			o.Socket = in.cfg.Socket
		}
	case meta.ModeThin:
		kc, err := thinKubeconfig(in.cfg.APIServer, in.cfg.ServiceAccountDir)
		if err == nil {
			var changed bool
			if changed, err = writeIfChanged(in.cfg.Kubeconfig, kc, 0o600); changed {
				in.log.Info("thin kubeconfig written", "file", in.cfg.Kubeconfig, "server", in.cfg.APIServer)
			}
		}
		if err != nil {
			// A thin conf without a usable kubeconfig fails every pod: no conf yet.
			in.note(slog.LevelError, "thin kubeconfig not written, retrying", "file", in.cfg.Kubeconfig, "err", err)
			return false
		}
		o.Kubeconfig = in.cfg.Kubeconfig
	}
	if in.cfg.ConfAfter != nil {
		select {
		case <-in.cfg.ConfAfter:
		default:
			in.note(slog.LevelInfo, "conf waits for the agent to serve", "conf", in.ConfPath())
			return false
		}
	}
	cluster, err := meta.FirstForeignConf(in.cfg.ConfDir)
	if err != nil {
		// CNI spec: the runtime uses the lexically first conf. Written before the cluster
		// network's, ours would make the node look network-ready with nothing to wrap.
		in.note(slog.LevelInfo, "waiting for the cluster network's conf", "confDir", in.cfg.ConfDir, "err", err)
		return false
	}
	path, changed, err := meta.Generate(o)
	if err != nil {
		in.note(slog.LevelError, "conf not written, retrying", "conf", in.ConfPath(), "clusterNetwork", cluster, "err", err)
		return false
	}
	if changed {
		in.log.Info("conf written", "conf", path, "mode", in.cfg.Conf, "clusterNetwork", cluster)
	}
	if first := firstConf(in.cfg.ConfDir); first != "" && first != path {
		in.note(slog.LevelWarn, "a conf sorts before ours: the runtime uses it, not multinet", "conf", first, "ours", path, "clusterNetwork", cluster)
	} else {
		in.note(slog.LevelInfo, "installed", "conf", path, "clusterNetwork", cluster)
	}
	return true
}

// learnOwner reads, once, which DaemonSet runs this pod, and reads that DaemonSet: at stop the
// pod may already be gone from the API (force-deleted), its owner is then still known; and a
// refusal at stop counts as an uninstall only if these reads worked before.
func (in *Installer) learnOwner(ctx context.Context) {
	if in.owner != nil || !in.canUninstall() {
		return
	}
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	o, ok, err := podOwner(c, in.cfg.Kube, in.cfg.PodNamespace, in.cfg.PodName)
	if err != nil {
		in.log.Warn("cannot read this pod's DaemonSet yet (needed to tell an uninstall from a restart)", "err", err)
		return
	}
	if !ok {
		in.log.Warn("this pod has no DaemonSet owner: a stop never uninstalls", "pod", in.cfg.PodNamespace+"/"+in.cfg.PodName)
		in.owner = &owner{}
		return
	}
	if _, _, err := daemonSetGone(c, in.cfg.Kube, o); err != nil {
		in.log.Warn("cannot read this pod's DaemonSet (RBAC: get daemonsets in its namespace); an uninstall may leave the conf", "daemonSet", o.String(), "err", err)
		if !revoked(err) {
			return // retried on the next look
		}
	} else {
		in.accessOK = true
	}
	in.owner = &o
}

// revoked tells the API refusing the agent's own identity: its service account (401) or its
// RBAC (403) deleted, which is what `kubectl delete -k` does together with the DaemonSet.
func revoked(err error) bool {
	return apierrors.IsUnauthorized(err) || apierrors.IsForbidden(err)
}

func (in *Installer) canUninstall() bool {
	return in.cfg.Kube != nil && in.cfg.PodName != "" && in.cfg.PodNamespace != "" && in.cfg.Conf != ModeNone
}

// stop keeps everything on a restart or upgrade, and removes the conf and the thin
// kubeconfig on an uninstall: the pod's DaemonSet is deleted or being deleted, or the API
// refuses the agent reads it allowed at start (`kubectl delete -k` deletes the service account
// and RBAC with the DaemonSet; a force-deleted agent pod's token is refused too, then the next
// pod writes the conf again within a few seconds). When that
// cannot be told (no pod identity, no API answer within UninstallTimeout) the conf is kept:
// a node without multinet during a rolling update breaks every new pod's networks, while a
// conf left after an uninstall is one file to remove (README). Binaries stay either way: no
// conf names them any more, and a runtime that DELs an old pod with the conf it cached at ADD
// still finds them (the shim's DEL then runs from the delegate cache without the agent).
func (in *Installer) stop(ctx context.Context) {
	if !in.canUninstall() {
		in.log.Info("stopping: conf kept (no pod identity or API to tell an uninstall)", "conf", in.ConfPath())
		return
	}
	ctx, cancel := context.WithTimeout(ctx, in.cfg.UninstallTimeout)
	defer cancel()
	for {
		gone, why, err := in.uninstalling(ctx)
		if err == nil {
			if !gone {
				in.log.Info("stopping: conf kept for the next agent (a restart or an upgrade)", "conf", in.ConfPath(), "why", why)
				return
			}
			in.uninstall(why)
			return
		}
		select {
		case <-ctx.Done():
			in.log.Error("stopping: conf kept, cannot tell an uninstall from a restart", "conf", in.ConfPath(), "err", err)
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (in *Installer) uninstalling(ctx context.Context) (bool, string, error) {
	const revokedWhy = "the agent's service account or RBAC is deleted (the API refuses reads that worked at start): an uninstall"
	o, ok, err := podOwner(ctx, in.cfg.Kube, in.cfg.PodNamespace, in.cfg.PodName)
	switch {
	case err == nil && !ok:
		return false, "pod has no DaemonSet owner", nil
	case err == nil:
	case in.owner == nil:
		return false, "", err
	case in.owner.name == "":
		return false, "pod has no DaemonSet owner", nil
	case revoked(err) && in.accessOK:
		return true, revokedWhy + ": " + err.Error(), nil
	default:
		o = *in.owner // the pod is gone from the API already; its owner was learnt at start
	}
	gone, why, err := daemonSetGone(ctx, in.cfg.Kube, o)
	if err != nil && revoked(err) && in.accessOK {
		return true, revokedWhy + ": " + err.Error(), nil
	}
	return gone, why, err
}

func (in *Installer) uninstall(why string) {
	var errs []error
	files := []string{in.ConfPath()}
	if in.cfg.Kubeconfig != "" {
		files = append(files, in.cfg.Kubeconfig)
	}
	for _, f := range files {
		if err := fsutil.Remove(f); err != nil {
			errs = append(errs, err)
		}
	}
	// Our own dir in the conf dir goes too when empty: an uninstall leaves nothing of ours there.
	if d := filepath.Join(in.cfg.ConfDir, "multinet.d"); in.cfg.Kubeconfig != "" && filepath.Dir(in.cfg.Kubeconfig) == d {
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			in.log.Warn("uninstall: our dir in the conf dir is not empty, left", "dir", d, "err", err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		in.log.Error("uninstall: removing multinet's files failed", "why", why, "err", err)
		return
	}
	in.log.Info("uninstalled: conf removed, new pods start on the cluster network alone", "why", why, "removed", files)
}

// firstConf is the conf the runtime loads: the lexically first with a CNI extension (CNI spec;
// containerd and CRI-O skip no other names).
func firstConf(dir string) string {
	files, err := libcni.ConfFiles(dir, []string{".conf", ".conflist", ".json"})
	if err != nil || len(files) == 0 {
		return ""
	}
	sort.Strings(files)
	return files[0]
}
