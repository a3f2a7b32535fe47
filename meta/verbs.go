package meta

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	corev1 "k8s.io/api/core/v1"

	"github.com/multinet-io/multinet/meta/delcache"
)

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
