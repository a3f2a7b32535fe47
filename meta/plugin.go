package meta

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	nadutils "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/utils"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/internal/fsutil"
	"github.com/multinet-io/multinet/meta/delcache"
	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/podresources"
)

// Versions the meta-plugin speaks; delegates of any older version work through libcni.
var Versions = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

// Plugin runs one CNI command. Its fields are the seams: tests and a future node daemon fill
// them in-process; the binary builds them from the netconf with New.
type Plugin struct {
	Conf    *Config
	Nets    Networks // nil: no NADs (static delegates / clusterNetwork file only)
	Devices DeviceLookup
	Exec    invoke.Exec // nil: exec the plugin binaries
	Sys     *pci.SysFS
	// DevInfo is where device-info files are read from ("": devinfo.DefaultBase).
	DevInfo devinfo.Dir
	Log     *slog.Logger
	Timeout time.Duration
	// Depth is how many meta-plugins run above this one (EnvDepth); above 0 nothing is attached.
	Depth int

	// netsErr is why the API client could not be built. Only DEL goes on without it: it works
	// from the cache, and an unreadable kubeconfig (multinet uninstalled with its conf left
	// behind) must not block pod deletion.
	netsErr error
	// logFile is the file Log writes to, closed by Close.
	logFile io.Closer
}

// kubeletDevices asks kubelet (PodResources, then its checkpoint file) which devices a pod got.
func kubeletDevices(c *Config) DeviceLookup {
	cfg := podresources.Config{Socket: c.PodResourcesSocket, Checkpoint: c.KubeletCheckpoint}
	return func(ctx context.Context, namespace, name, uid, resource string) ([]string, error) {
		return podresources.DeviceIDs(ctx, cfg, namespace, name, uid, resource)
	}
}

// Env is what the binary learns from its environment; cmd/ reads it (the CNI plugin takes no
// flags) and passes it here as values, so nothing below reads the process environment.
type Env struct {
	SysfsRoot string      // "": /sys
	DevInfo   devinfo.Dir // "": devinfo.DefaultBase
	Depth     int         // EnvDepth as the binary found it
}

// New builds a Plugin from the netconf and CNI_ARGS for one call of the binary. Close it when
// done (it owns the netconf's log file).
func New(stdin []byte, cniArgs string, env Env) (p *Plugin, err error) {
	var logFile io.Closer
	defer func() {
		if r := recover(); r != nil {
			if logFile != nil {
				logFile.Close()
			}
			p, err = nil, fmt.Errorf("multinet config: internal error: %v", r)
		}
	}()
	conf, err := LoadConfig(stdin)
	if err != nil {
		return nil, err
	}
	var log *slog.Logger
	log, logFile = newLogger(conf)
	p = &Plugin{Conf: conf, Sys: pci.New(env.SysfsRoot), DevInfo: env.DevInfo, Log: log, logFile: logFile, Timeout: 2 * time.Minute, Depth: env.Depth}
	switch {
	case conf.Kubeconfig != "":
		nets, err := newAPINetworks(conf.Kubeconfig)
		if err != nil {
			p.netsErr = err
		} else {
			p.Nets = nets
		}
	case conf.NetworkDir != "":
		p.Nets = &dirNetworks{dir: conf.NetworkDir, statusDir: conf.CacheDir + "/status", args: parseCNIArgs(cniArgs)}
	}
	p.Devices = kubeletDevices(conf)
	return p, nil
}

// Shared is what a long-lived process (the node agent) builds once and hands to every request.
type Shared struct {
	// Nets serves NADs and pods for confs in API mode (a conf with networkDir gets its own
	// standalone source); nil: none.
	Nets    Networks
	Exec    invoke.Exec // nil: exec the plugin binaries
	Sys     *pci.SysFS
	DevInfo devinfo.Dir
	Log     *slog.Logger
	Timeout time.Duration
	// Depth is the request's EnvDepth, as the shim found it.
	Depth int
}

// NewShared builds the Plugin for one request from its netconf and CNI_ARGS over the process's
// shared parts: no API client, log file or sysfs root is made per call. Per-request data
// (CNI_ARGS) lives only in this Plugin.
func NewShared(stdin []byte, cniArgs string, sh Shared) (p *Plugin, err error) {
	defer func() {
		if r := recover(); r != nil {
			p, err = nil, fmt.Errorf("multinet config: internal error: %v", r)
		}
	}()
	conf, err := LoadConfig(stdin)
	if err != nil {
		return nil, err
	}
	p = &Plugin{Conf: conf, Nets: sh.Nets, Exec: sh.Exec, Sys: sh.Sys, DevInfo: sh.DevInfo, Log: sh.Log, Timeout: sh.Timeout, Depth: sh.Depth}
	if conf.NetworkDir != "" {
		p.Nets = &dirNetworks{dir: conf.NetworkDir, statusDir: conf.CacheDir + "/status", args: parseCNIArgs(cniArgs)}
	}
	p.Devices = kubeletDevices(conf)
	return p, nil
}

// logger is Log, or warnings to stderr for a Plugin built without one.
func (p *Plugin) logger() *slog.Logger {
	if p.Log == nil {
		p.Log = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("plugin", "multinet")
	}
	return p.Log
}

// Close releases the log file.
func (p *Plugin) Close() error {
	if p.logFile == nil {
		return nil
	}
	err := p.logFile.Close()
	p.logFile = nil
	return err
}

// newLogger logs to logFile under logDir, or to stderr. A logFile that is outside logDir or
// cannot be opened safely is not fatal: refusing would fail every ADD and DEL on the node (pods
// neither start nor go away) over a log setting, so we log to stderr, which the runtime keeps,
// and say why there first.
func newLogger(c *Config) (*slog.Logger, io.Closer) {
	level := slog.LevelWarn
	switch strings.ToLower(c.LogLevel) {
	case "debug", "verbose":
		level = slog.LevelDebug
	case "info":
		level = slog.LevelInfo
	case "error", "panic":
		level = slog.LevelError
	}
	var w io.Writer = os.Stderr
	var f *os.File
	var why error
	if c.LogFile != "" {
		if f, why = fsutil.OpenLogFile(c.LogDir, c.LogFile); why == nil {
			w = f
		}
	}
	log := slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})).With("plugin", "multinet")
	if why != nil {
		log.Warn("logFile ignored, logging to stderr", "err", why.Error())
	}
	if f == nil {
		return log, nil
	}
	return log, f
}

// podRef is the pod as the runtime names it in CNI_ARGS.
type podRef struct {
	Namespace, Name, UID string
	args                 [][2]string // CNI_ARGS to pass on to delegates
}

func parsePodRef(cniArgs string) podRef {
	m := parseCNIArgs(cniArgs)
	r := podRef{Namespace: m["K8S_POD_NAMESPACE"], Name: m["K8S_POD_NAME"], UID: m["K8S_POD_UID"]}
	for _, k := range sortedKeys(m) {
		// Our standalone-mode args are for us; annotation syntax would confuse strict parsers.
		if strings.HasPrefix(k, "MULTINET_") {
			continue
		}
		r.args = append(r.args, [2]string{k, m[k]})
	}
	if _, ok := m["IgnoreUnknown"]; !ok {
		r.args = append([][2]string{{"IgnoreUnknown", "1"}}, r.args...)
	}
	return r
}

func (p *Plugin) cni(path string) *libcni.CNIConfig {
	return delcache.CNI(p.Conf.binPath(path), p.Conf.CacheDir, p.exec())
}

// ctx bounds one verb by Timeout under the caller's context (a daemon cancels it when the
// shim hangs up or on shutdown).
func (p *Plugin) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	if p.Timeout == 0 {
		return context.WithCancel(parent)
	}
	return context.WithTimeout(parent, p.Timeout)
}

// undoCtx is for removing what a failed ADD added: it runs to the end even when the caller
// gave up (undoing half of an undo would leak), bounded by its own Timeout.
func (p *Plugin) undoCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return p.ctx(context.WithoutCancel(ctx))
}

func (p *Plugin) pod(ctx context.Context, ref podRef) (*corev1.Pod, error) {
	if p.Nets == nil || ref.Name == "" {
		// No API and no networkDir, or a runtime that is not Kubernetes: cluster network only.
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ref.Namespace, Name: ref.Name}}, nil
	}
	pod, err := p.Nets.Pod(ctx, ref.Namespace, ref.Name)
	if err != nil {
		return nil, err
	}
	if pod == nil {
		return nil, fmt.Errorf("get pod %s/%s: no pod and no error", ref.Namespace, ref.Name)
	}
	if ref.UID != "" && pod.UID != "" && string(pod.UID) != ref.UID {
		if c, ok := p.Nets.(CachedNetworks); ok {
			// A cache may still hold the pod this one replaced (a StatefulSet's pod recreated
			// under its name): ask the API server before refusing.
			if fresh, err := c.LivePod(ctx, ref.Namespace, ref.Name); err == nil && fresh != nil {
				pod = fresh
			}
		}
	}
	if ref.UID != "" && pod.UID != "" && string(pod.UID) != ref.UID {
		if _, mirror := pod.Annotations["kubernetes.io/config.mirror"]; !mirror {
			return nil, fmt.Errorf("pod %s/%s: the runtime's K8S_POD_UID %s is not the API pod's UID %s (the pod was deleted and recreated)",
				ref.Namespace, ref.Name, ref.UID, pod.UID)
		}
	}
	return pod, nil
}

func (p *Plugin) runtimeConf(args *skel.CmdArgs, ref podRef, d Delegate, netns string) *libcni.RuntimeConf {
	return d.RuntimeConf(args.ContainerID, netns, ref.args)
}

// Add attaches the cluster network and every selected network; on any failure it removes
// what it added, in reverse, and returns an error naming the network and interface.
func (p *Plugin) Add(args *skel.CmdArgs) (types.Result, error) {
	return p.AddContext(context.Background(), args)
}

// AddContext is Add under ctx: cancelling it stops the delegates still to run, and what was
// added is then removed (that undo is not cancelled).
func (p *Plugin) AddContext(parent context.Context, args *skel.CmdArgs) (_ types.Result, err error) {
	defer p.recoverPanic("ADD", args.ContainerID, args.Args, &err)
	if err := p.nested("ADD"); err != nil {
		return nil, err
	}
	ctx, cancel := p.ctx(parent)
	defer cancel()
	if err := p.Conf.waitReady(ctx); err != nil {
		return nil, err
	}
	if p.netsErr != nil {
		return nil, p.netsErr
	}
	ref := parsePodRef(args.Args)
	log := p.logger().With("container", args.ContainerID, "pod", ref.Namespace+"/"+ref.Name)
	pod, err := p.pod(ctx, ref)
	if err != nil {
		return nil, err
	}
	pl := &planner{conf: p.Conf, nets: p.Nets, devices: p.Devices, sys: p.Sys}
	uid := ref.UID
	if uid == "" {
		uid = string(pod.UID)
	}
	delegates, err := pl.plan(ctx, pod, uid, args.IfName)
	if err != nil {
		return nil, err
	}
	entry := &cacheEntry{ContainerID: args.ContainerID, NetNS: args.Netns, IfName: args.IfName,
		PodNamespace: ref.Namespace, PodName: ref.Name, PodUID: ref.UID, CNIArgs: ref.args, Delegates: delegates}
	// Written before any delegate runs: a crash part-way still leaves DEL a full list.
	if err := saveCache(p.Conf.CacheDir, entry); err != nil {
		return nil, err
	}
	cni := p.cni(args.Path)
	results := make([]*types100.Result, 0, len(delegates))
	// undo removes delegates upTo..0 and returns err, saying what it could not remove. Those
	// stay recorded, so the runtime's DEL after a failed ADD retries them. A delegate whose own
	// ADD failed (addFailed) is removed best-effort only: it has nothing recorded by libcni, and
	// a DEL it can never pass (its NAD is broken) must not make the pod undeletable.
	undo := func(upTo int, addFailed bool, err error) error {
		uctx, ucancel := p.undoCtx(ctx)
		defer ucancel()
		var left []Delegate
		var errs []error
		for i := upTo; i >= 0; i-- {
			d := delegates[i]
			list, lerr := d.List()
			if lerr == nil {
				lerr = cni.DelNetworkList(uctx, list, p.runtimeConf(args, ref, d, args.Netns))
			}
			if lerr != nil {
				log.Error("undo after failed ADD", "network", d.Name, "ifname", d.IfName, "err", lerr)
				if !(addFailed && i == upTo) {
					left = append([]Delegate{d}, left...)
					errs = append(errs, fmt.Errorf("network %s on %s: %w", d.Name, d.IfName, lerr))
				}
			}
		}
		if len(left) == 0 {
			removeCache(p.Conf.CacheDir, args.ContainerID)
			return err
		}
		entry.Delegates = left
		if serr := saveCache(p.Conf.CacheDir, entry); serr != nil {
			log.Error("undo after failed ADD: record what is left", "err", serr)
		}
		return fmt.Errorf("%w (undo incomplete, left for DEL: %v)", err, errors.Join(errs...))
	}
	for i, d := range delegates {
		start := time.Now()
		list, err := d.List()
		var res types.Result
		if err == nil {
			res, err = cni.AddNetworkList(ctx, list, p.runtimeConf(args, ref, d, args.Netns))
		}
		var r100 *types100.Result
		if err == nil {
			r100, err = types100.NewResultFromResult(res)
		}
		if err != nil {
			return nil, undo(i, true, fmt.Errorf("pod %s/%s: network %s on %s: %w", ref.Namespace, ref.Name, d.Name, d.IfName, err))
		}
		log.Info("attached", "network", d.Name, "ifname", d.IfName, "ms", time.Since(start).Milliseconds())
		results = append(results, r100)
	}
	if err := p.fixDefaultRoutes(args.Netns, delegates); err != nil {
		return nil, undo(len(delegates)-1, false, fmt.Errorf("pod %s/%s: %w", ref.Namespace, ref.Name, err))
	}
	statuses, err := p.statuses(args.ContainerID, delegates, results, podGateways(args.Netns))
	if err == nil && p.Nets != nil && ref.Name != "" {
		err = p.Nets.SetStatus(ctx, pod, args.ContainerID, statuses)
	}
	if err != nil {
		return nil, undo(len(delegates)-1, false, fmt.Errorf("pod %s/%s: write %s: %w", ref.Namespace, ref.Name, NetworkStatusAnnot, err))
	}
	return results[0], nil
}

// statuses builds network-status, with device-info from the delegate's file, the device
// plugin's file, or the result's pciID/socketPath, in that order. podGws (from podGateways)
// gives the pod's default-route gateways per interface: an interface whose default route was
// removed reports none.
func (p *Plugin) statuses(containerID string, ds []Delegate, results []*types100.Result, podGws map[string][]string) ([]nadv1.NetworkStatus, error) {
	var out []nadv1.NetworkStatus
	for i, d := range ds {
		if d.Auxiliary {
			continue
		}
		info := p.deviceInfo(containerID, d, results[i])
		sts, err := nadutils.CreateNetworkStatuses(results[i], d.Name, d.IsDefault, info)
		if err == nil && len(sts) == 0 {
			// A result without pod interfaces (a pre-0.3 delegate) still attached something:
			// one entry with its IPs, on the interface name it was given.
			var st *nadv1.NetworkStatus
			st, err = nadutils.CreateNetworkStatus(results[i], d.Name, d.IsDefault, info)
			sts = []*nadv1.NetworkStatus{st}
		}
		if err != nil {
			return nil, fmt.Errorf("network %s: %w", d.Name, err)
		}
		var gws []string
		for _, ip := range results[i].IPs {
			if ip.Gateway != nil {
				gws = append(gws, ip.Gateway.String())
			}
		}
		for _, st := range sts {
			if st.Interface == "" {
				st.Interface = d.IfName
			}
			if actual, ok := podGws[st.Interface]; ok {
				st.Gateway = actual
			}
			out = append(out, statusEntry(d, st, gws))
		}
	}
	return out, nil
}

func (p *Plugin) deviceInfo(containerID string, d Delegate, r *types100.Result) *nadv1.DeviceInfo {
	list, err := d.List()
	if err == nil {
		if info, _ := devinfo.Load(p.DevInfo.CNIPath(list.Name, containerID, d.IfName)); info != nil {
			return info
		}
	}
	if d.ResourceName != "" && d.DeviceID != "" {
		if info, _ := devinfo.Load(p.DevInfo.DPPath(d.ResourceName, d.DeviceID)); info != nil {
			return info
		}
	}
	for _, itf := range r.Interfaces {
		switch {
		case itf.PciID != "":
			pf := ""
			if p.Sys != nil {
				pf, _, _ = p.Sys.PFOf(itf.PciID)
			}
			return devinfo.PCI(itf.PciID, pf)
		case itf.SocketPath != "":
			return &nadv1.DeviceInfo{Type: nadv1.DeviceInfoTypeVHostUser, Version: nadv1.DeviceInfoVersion,
				VhostUser: &nadv1.VhostDevice{Path: itf.SocketPath}}
		}
	}
	if d.DeviceID != "" && pci.ValidAddress(d.DeviceID) {
		pf := ""
		if p.Sys != nil {
			pf, _, _ = p.Sys.PFOf(d.DeviceID)
		}
		return devinfo.PCI(d.DeviceID, pf)
	}
	return nil
}

func marshalStatus(st []nadv1.NetworkStatus) ([]byte, error) { return json.MarshalIndent(st, "", "  ") }

// Del removes every attachment, in reverse, and reports all failures. A missing cache or netns
// is not an error: the kubelet retries DEL until it succeeds, and a pod that was never fully
// attached must still be deletable.
func (p *Plugin) Del(args *skel.CmdArgs) error { return p.DelContext(context.Background(), args) }

// DelContext is Del under ctx. The work is package delcache's, which the thick-mode shim runs
// by itself when the agent is down: both read and write the same records.
func (p *Plugin) DelContext(parent context.Context, args *skel.CmdArgs) (err error) {
	defer p.recoverPanic("DEL", args.ContainerID, args.Args, &err)
	if p.Depth > 0 {
		// A nested ADD attached nothing (it refused), so there is nothing to remove; failing
		// would only make the outer DEL, and so the pod, undeletable.
		p.logger().Error("DEL as a delegate of multinet: nothing to do", "container", args.ContainerID, EnvDepth, p.Depth)
		return nil
	}
	ctx, cancel := p.ctx(parent)
	defer cancel()
	log := p.logger().With("container", args.ContainerID)
	if _, err := delcache.Del(ctx, p.Conf.binPath(args.Path), p.exec(), p.Conf.CacheDir, args.ContainerID, args.Netns, log); err != nil {
		return err
	}
	if p.Nets != nil {
		p.Nets.ClearStatus(args.ContainerID)
	}
	return nil
}

// Check runs CHECK on every attachment that supports it.
func (p *Plugin) Check(args *skel.CmdArgs) error { return p.CheckContext(context.Background(), args) }

// CheckContext is Check under ctx.
func (p *Plugin) CheckContext(parent context.Context, args *skel.CmdArgs) (err error) {
	defer p.recoverPanic("CHECK", args.ContainerID, args.Args, &err)
	if err := p.nested("CHECK"); err != nil {
		return err
	}
	ctx, cancel := p.ctx(parent)
	defer cancel()
	entry, err := loadCache(p.Conf.CacheDir, args.ContainerID)
	if err != nil {
		return err
	}
	if entry == nil {
		return fmt.Errorf("container %s: no attachments recorded (ADD did not run or did not finish)", args.ContainerID)
	}
	cni := p.cni(args.Path)
	ref := podRef{Namespace: entry.PodNamespace, Name: entry.PodName, args: entry.CNIArgs}
	var errs []error
	for _, d := range entry.Delegates {
		list, err := d.List()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok, _ := version.GreaterThanOrEqualTo(list.CNIVersion, "0.4.0"); !ok || list.DisableCheck {
			continue
		}
		if err := cni.CheckNetworkList(ctx, list, p.runtimeConf(args, ref, d, args.Netns)); err != nil {
			errs = append(errs, fmt.Errorf("network %s on %s: %w", d.Name, d.IfName, err))
		}
	}
	return errors.Join(errs...)
}

// Status reports whether pods can be attached: the readiness indicator exists and the cluster
// network's plugins answer STATUS.
func (p *Plugin) Status(args *skel.CmdArgs) error { return p.StatusContext(context.Background(), args) }

// StatusContext is Status under ctx.
func (p *Plugin) StatusContext(parent context.Context, args *skel.CmdArgs) (err error) {
	defer p.recoverPanic("STATUS", args.ContainerID, args.Args, &err)
	if err := p.nested("STATUS"); err != nil {
		return err
	}
	if err := p.Conf.ready(); err != nil {
		return &types.Error{Code: types.ErrPluginNotAvailable, Msg: err.Error()}
	}
	if p.netsErr != nil {
		return &types.Error{Code: types.ErrPluginNotAvailable, Msg: p.netsErr.Error()}
	}
	ctx, cancel := p.ctx(parent)
	defer cancel()
	pl := &planner{conf: p.Conf, nets: p.Nets}
	cluster, _, err := pl.clusterDelegate(ctx, &corev1.Pod{}, "eth0")
	if err != nil {
		return &types.Error{Code: types.ErrPluginNotAvailable, Msg: err.Error()}
	}
	list, err := cluster.List()
	if err != nil {
		return err
	}
	if ok, _ := version.GreaterThanOrEqualTo(list.CNIVersion, "1.1.0"); !ok {
		return nil
	}
	return p.cni(args.Path).GetStatusNetworkList(ctx, list)
}

// GC deletes the attachments of containers the runtime no longer knows (a missed DEL), so their
// IPs and devices come back.
func (p *Plugin) GC(args *skel.CmdArgs) error { return p.GCContext(context.Background(), args) }

// GCContext is GC under ctx.
func (p *Plugin) GCContext(ctx context.Context, args *skel.CmdArgs) (err error) {
	defer p.recoverPanic("GC", args.ContainerID, args.Args, &err)
	if err := p.nested("GC"); err != nil {
		return err
	}
	var in struct {
		Valid []types.GCAttachment `json:"cni.dev/valid-attachments"`
	}
	if err := json.Unmarshal(args.StdinData, &in); err != nil {
		return err
	}
	valid := map[string]bool{}
	for _, a := range in.Valid {
		valid[a.ContainerID] = true
	}
	var errs []error
	for _, id := range cachedContainers(p.Conf.CacheDir) {
		if valid[id] {
			continue
		}
		entry, _ := loadCache(p.Conf.CacheDir, id)
		netns := ""
		if entry != nil {
			netns = entry.NetNS
		}
		if err := p.DelContext(ctx, &skel.CmdArgs{ContainerID: id, Netns: netns, Path: args.Path, StdinData: args.StdinData}); err != nil {
			errs = append(errs, fmt.Errorf("gc container %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}
