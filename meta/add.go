package meta

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

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
	pl := &planner{conf: p.Conf, nets: p.Nets, devices: p.Devices, sys: p.Sys, hostViews: p.HostViews}
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
