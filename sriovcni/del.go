package sriovcni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/internal/fsutil"
	"github.com/multinet-io/multinet/pci"
)

// Del releases an attachment: the VF's settings and netdev go back as they were, IPAM is
// released, the device-info file and the cache are removed. It works from the cache ADD wrote,
// so it needs neither the pod's netns nor the process that ran ADD. Without a cache there is
// nothing to undo (ADD failed and cleaned up, or an earlier DEL finished): success.
func (p *Plugin) Del(a Args) error { return p.DelContext(context.Background(), a) }

// DelContext is Del under ctx.
func (p *Plugin) DelContext(ctx context.Context, a Args) error {
	st := p.store()
	c, err := st.loadCache(a.ContainerID, a.IfName)
	corrupt := errors.Is(err, errCorrupt)
	if err != nil && !corrupt {
		return fmt.Errorf("sriov: DEL %s/%s: %w", a.ContainerID, a.IfName, err)
	}
	var conf *NetConf
	if c != nil {
		conf, err = LoadConf(c.NetConf, c.CNIArgs)
	} else {
		conf, err = LoadConf(a.StdinData, a.Args)
	}
	log, closeLog := p.logger(conf)
	defer closeLog()
	if corrupt {
		// A cache that does not parse would fail this DEL forever and keep the pod
		// Terminating: move it aside and work from the VF's ownership record instead.
		if c = p.cacheFromOwner(log, a, true); c == nil {
			return nil
		}
		conf, err = LoadConf(c.NetConf, c.CNIArgs)
	} else if c == nil && err == nil {
		// The cache was quarantined earlier (by GC): the ownership record may still name us.
		if c = p.cacheFromOwner(log, a, false); c != nil {
			conf, err = LoadConf(c.NetConf, c.CNIArgs)
		}
	}
	if c == nil {
		log.Debug("DEL without a cache: nothing to release", "container", a.ContainerID, "ifname", a.IfName)
		// An ADD killed while writing the cache left its temp file, and nothing else.
		fsutil.RemoveTemps(st.cachePath(a.ContainerID, a.IfName))
		return nil
	}
	if err != nil {
		return fmt.Errorf("sriov: DEL %s/%s: cached netconf: %w", a.ContainerID, a.IfName, err)
	}
	log = log.With("vf", c.VF, "container", c.ContainerID, "ifname", c.IfName)
	if a.Netns == "" {
		// Some runtimes send DEL without CNI_NETNS; the netns ADD used may still exist.
		a.Netns = c.Netns
	}
	if err := p.teardown(ctx, log, c, conf, a); err != nil {
		log.Error("DEL failed", "err", err)
		return err
	}
	log.Info("DEL done")
	return nil
}

// teardown undoes one cached attachment. A VF that now belongs to another attachment (this is
// a late DEL from a container whose VF was taken over) is left alone; the attachment's own
// IPAM lease, device-info and cache still go. On any failure the state stays for a retry.
func (p *Plugin) teardown(ctx context.Context, log *slog.Logger, c *Cache, conf *NetConf, a Args) error {
	st := p.store()
	lk, err := st.lock(c.VF, "sriov: vf "+c.VF)
	if err != nil {
		return err
	}
	defer lk.Unlock()
	owner, err := st.loadOwner(c.VF)
	if errors.Is(err, errCorrupt) {
		// The attachment's cache has what DEL needs; the unreadable record would only block
		// this DEL and every later ADD of the VF.
		st.quarantine(log, st.ownerPath(c.VF), err, Problem{VF: c.VF, ContainerID: c.ContainerID, IfName: c.IfName,
			Left: "none if this DEL succeeds: the attachment's cache had the VF's original settings"})
		owner, err = nil, nil
	}
	if err != nil {
		return fmt.Errorf("sriov: vf %s: %w", c.VF, err)
	}
	mine := owner == nil || (owner.ContainerID == c.ContainerID && owner.IfName == c.IfName)
	var errs []error
	if mine {
		m, closeNL, err := p.newManager()
		if err != nil {
			return err
		}
		errs = append(errs, p.release(log, m, c, a.Netns, true)...)
		closeNL()
	} else {
		log.Warn("late DEL: the VF now belongs to another container; leaving it alone",
			"owner", owner.ContainerID, "ownerNetns", owner.Netns)
	}
	if conf.IPAM.Type != "" {
		ia := Args{ContainerID: c.ContainerID, Netns: a.Netns, IfName: c.IfName, Args: c.CNIArgs, Path: a.Path}
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		_, err := execIPAM(ctx, "DEL", conf.IPAM.Type, ia, c.NetConf)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("sriov: vf %s: %w", c.VF, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := devinfo.Remove(p.DevInfo.CNIPath(c.Network, c.ContainerID, c.IfName)); err != nil {
		return err
	}
	// Without a record (owner nil) too: the ADD may have died writing it, leaving its temp file.
	if mine {
		if err := removeFile(st.ownerPath(c.VF)); err != nil {
			return err
		}
	}
	return removeFile(st.cachePath(c.ContainerID, c.IfName))
}

// GC releases every attachment of this network the plugin holds state for that is not in
// the runtime's list of valid attachments (cni.dev/valid-attachments): what missed DELs left.
func (p *Plugin) GC(a Args) error { return p.GCContext(context.Background(), a) }

// GCContext is GC under ctx.
func (p *Plugin) GCContext(ctx context.Context, a Args) error {
	nc := &types.NetConf{}
	if err := json.Unmarshal(a.StdinData, nc); err != nil {
		return fmt.Errorf("sriov: GC: parse netconf: %w", err)
	}
	valid := map[[2]string]bool{}
	for _, v := range nc.ValidAttachments {
		valid[[2]string{v.ContainerID, v.IfName}] = true
	}
	gcLog, closeGCLog := p.logger(nil)
	defer closeGCLog()
	caches, err := p.store().allCaches(gcLog)
	var errs []error
	if err != nil {
		errs = append(errs, fmt.Errorf("sriov: GC: %w", err))
	}
	for _, c := range caches {
		if c.Network != nc.Name || valid[[2]string{c.ContainerID, c.IfName}] {
			continue
		}
		conf, err := LoadConf(c.NetConf, c.CNIArgs)
		if err != nil {
			errs = append(errs, fmt.Errorf("sriov: GC %s/%s: %w", c.ContainerID, c.IfName, err))
			continue
		}
		log, closeLog := p.logger(conf)
		log = log.With("vf", c.VF, "container", c.ContainerID, "ifname", c.IfName)
		log.Info("GC: releasing an attachment the runtime no longer knows")
		if err := p.teardown(ctx, log, c, conf, Args{Netns: c.Netns, Path: a.Path}); err != nil {
			errs = append(errs, err)
		}
		closeLog()
	}
	return errors.Join(errs...)
}

// cacheFromOwner quarantines the attachment's corrupt cache and rebuilds what DEL needs from the
// VF's ownership record: the VF is the one DEL's netconf names (the runtime sends DEL the ADD's
// netconf), and the record must say this attachment holds it. Without such a record there is
// nothing to restore from: the problem is recorded and nil returned (DEL succeeds).
// With corrupt false there is no cache at all (GC quarantined it): nil, quietly, unless the
// record names this attachment.
func (p *Plugin) cacheFromOwner(log *slog.Logger, a Args, corrupt bool) *Cache {
	st := p.store()
	path := st.cachePath(a.ContainerID, a.IfName)
	_, err := readJSON(path, &Cache{})
	prob := Problem{ContainerID: a.ContainerID, IfName: a.IfName}
	giveUp := func(left string) *Cache {
		if corrupt {
			prob.Left = left
			st.quarantine(log, path, err, prob)
		}
		return nil
	}
	conf, cerr := LoadConf(a.StdinData, a.Args)
	if cerr != nil {
		return giveUp("unknown VF: DEL's netconf names none (" + cerr.Error() + "); its settings, netdev and IPAM lease were not released")
	}
	prob.VF = conf.DeviceID
	owner, oerr := st.loadOwner(conf.DeviceID)
	if errors.Is(oerr, errCorrupt) && corrupt {
		st.quarantine(log, st.ownerPath(conf.DeviceID), oerr, Problem{VF: conf.DeviceID, ContainerID: a.ContainerID, IfName: a.IfName,
			Left: "see the record of the attachment's cache"})
		owner, oerr = nil, nil
	}
	if oerr != nil {
		return giveUp("the VF's ownership record cannot be read (" + oerr.Error() + "): its settings and netdev were not restored")
	}
	if owner != nil && (owner.ContainerID != a.ContainerID || owner.IfName != a.IfName) {
		return giveUp("the VF belongs to container " + owner.ContainerID + " now: left alone")
	}
	if owner == nil {
		if !corrupt {
			return nil
		}
		// Nothing says what the VF was like before: still bring its netdev back from the pod,
		// found by its PCI address, so the VF is not lost with the pod.
		prob.Left = "no record of the VF's settings from before this pod: its netdev was brought back to the host if it was in the pod, but its name, MAC, MTU and PF settings were not restored"
		st.quarantine(log, path, err, prob)
		c := &Cache{ContainerID: a.ContainerID, IfName: a.IfName, Netns: a.Netns, Network: conf.Name,
			NetConf: a.StdinData, CNIArgs: a.Args, VF: conf.DeviceID, Original: Original{NetdevID: "pci/" + conf.DeviceID}}
		p.fillFromSysfs(c)
		c.DPDK = pci.UserspaceDriver(c.Driver)
		return c
	}
	if corrupt {
		prob.Left = "none if this DEL succeeds: rebuilt from the VF's ownership record"
		st.quarantine(log, path, err, prob)
	} else {
		log.Warn("DEL without a cache: releasing the VF from its ownership record", "vf", conf.DeviceID, "container", a.ContainerID)
	}
	c := &Cache{ContainerID: a.ContainerID, IfName: a.IfName, Netns: owner.Netns, Network: owner.Network,
		NetConf: a.StdinData, CNIArgs: a.Args, VF: conf.DeviceID, Original: owner.Original}
	p.fillFromSysfs(c)
	c.DPDK = owner.Original.Netdev == ""
	return c
}

// fillFromSysfs sets a rebuilt cache's PF, VF index and driver from sysfs.
func (p *Plugin) fillFromSysfs(c *Cache) {
	if d, err := p.Sys.Device(c.VF); err == nil {
		c.PF, c.VFIndex, c.Driver = d.PFAddress, d.VFIndex, d.Driver
		if nds, err := p.Sys.Netdevs(d.PFAddress); err == nil && len(nds) > 0 {
			c.PFNetdev = nds[0]
		}
	}
}
