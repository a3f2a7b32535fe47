package sriovcni

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ipam"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/multinet-io/multinet/vfmanager"
)

// Add gives the netconf's VF to the container and returns the CNI result (at the current
// spec version; the caller converts it to the netconf's cniVersion). On failure nothing it
// changed stays changed.
func (p *Plugin) Add(a Args) (*current.Result, error) { return p.AddContext(context.Background(), a) }

// AddContext is Add under ctx (the IPAM call is cancelled with it; undoing a failed ADD is not).
func (p *Plugin) AddContext(ctx context.Context, a Args) (*current.Result, error) {
	conf, err := LoadConf(a.StdinData, a.Args)
	if err != nil {
		return nil, err
	}
	log, closeLog := p.logger(conf)
	defer closeLog()
	log = log.With("vf", conf.DeviceID, "container", a.ContainerID, "ifname", a.IfName)
	if a.ContainerID == "" || a.IfName == "" {
		return nil, fmt.Errorf("sriov: vf %s: container ID and interface name are required", conf.DeviceID)
	}
	if !p.Sys.Exists(conf.DeviceID) {
		return nil, fmt.Errorf("sriov: field \"deviceID\": vf %s: no such PCI device under %s", conf.DeviceID, p.Sys.Root)
	}
	res, err := p.add(ctx, log, conf, a)
	if err != nil {
		log.Error("ADD failed", "err", err)
		return nil, err
	}
	log.Info("ADD done", "ips", len(res.IPs))
	return res, nil
}

// add runs the steps of an ADD under the VF's lock. Each step that changes the host is undone,
// on a later failure, by release: the same code DEL runs.
func (p *Plugin) add(ctx context.Context, log *slog.Logger, conf *NetConf, a Args) (_ *current.Result, err error) {
	st := p.store()
	lk, err := st.lock(conf.DeviceID, "sriov: vf "+conf.DeviceID)
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()

	stale, err := p.checkFree(log, st, conf, a)
	if err != nil {
		return nil, err
	}
	v, err := p.inspectReturned(conf.DeviceID, stale != nil)
	if err != nil {
		return nil, err
	}
	if err := p.guard(log, v, a); err != nil {
		return nil, err
	}
	m, closeNL, err := p.newManager()
	if err != nil {
		return nil, err
	}
	defer closeNL()
	admin, orig, err := originalSettings(log, m, conf, v, stale)
	if err != nil {
		return nil, err
	}

	// Everything DEL needs goes to disk before the host is touched.
	c := newCache(conf, a, v, orig)
	forget, err := st.record(c, &Owner{ContainerID: a.ContainerID, IfName: a.IfName, Netns: a.Netns,
		Network: conf.Name, Since: time.Now().UTC(), Original: orig})
	if err != nil {
		return nil, err
	}
	// From here every host change is undone by release. The pod's interface named ifName is
	// the VF's only once moveIn renamed it. An undo that did not finish keeps the cache and the
	// ownership record: the runtime's DEL then finishes it from them, and the next pod neither
	// takes the VF while it is still half given away nor records its leftovers as its
	// "original" settings.
	inPod := ""
	defer func() {
		if err == nil {
			return
		}
		if rerr := errors.Join(p.release(log, m, c, a.Netns, inPod == a.IfName)...); rerr != nil {
			log.Error("undo of a failed ADD incomplete; its state stays for DEL", "err", rerr, "cache", st.cachePath(a.ContainerID, a.IfName))
			err = fmt.Errorf("%w (undo incomplete, DEL retries it: %v)", err, rerr)
			return
		}
		forget()
	}()

	if err := p.configurePF(m, conf, v, admin, orig, stale); err != nil {
		return nil, err
	}
	var iface *current.Interface
	var podNS ns.NetNS
	iface, podNS, inPod, err = p.plug(conf, a, v, c, admin)
	if podNS != nil {
		defer podNS.Close()
	}
	if err != nil {
		return nil, err
	}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion, Interfaces: []*current.Interface{iface}}
	if conf.IPAM.Type != "" {
		ipCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		var releaseIPs func()
		if releaseIPs, err = assignIPs(ipCtx, log, conf, a, v, podNS, res); err != nil {
			return nil, err
		}
		// err here is the function's result: a later step's failure releases the lease.
		defer func() {
			if err != nil {
				releaseIPs()
			}
		}()
	}
	if _, err := p.saveDevInfo(conf, a, v); err != nil {
		return nil, err
	}
	return res, nil
}

// checkFree refuses a second ADD of the attachment and a VF another live pod holds. It returns
// the owner to take the VF over from when that owner's netns is gone (nil: the VF is free).
func (p *Plugin) checkFree(log *slog.Logger, st store, conf *NetConf, a Args) (stale *Owner, err error) {
	// A second ADD for an attachment that exists would overwrite what its DEL needs.
	if prev, err := st.loadCache(a.ContainerID, a.IfName); err != nil {
		return nil, err
	} else if prev != nil {
		return nil, fmt.Errorf("sriov: vf %s: container %s already has interface %s (vf %s); DEL it first", conf.DeviceID, a.ContainerID, a.IfName, prev.VF)
	}
	owner, err := st.loadOwner(conf.DeviceID)
	if errors.Is(err, errCorrupt) {
		owner, err = p.ownerFromCaches(log, conf.DeviceID, err)
	}
	if err != nil {
		return nil, fmt.Errorf("sriov: vf %s: %w", conf.DeviceID, err)
	}
	if owner == nil {
		return nil, nil
	}
	if netnsAlive(owner.Netns) {
		return nil, fmt.Errorf("sriov: vf %s: in use by container %s (netns %s)", conf.DeviceID, owner.ContainerID, owner.Netns)
	}
	// Its pod's namespace is gone and its DEL never came: the VF is orphaned. Take it, and
	// start from the settings it had before that pod, which the record kept.
	log.Warn("taking over a VF whose owner's netns is gone", "previousContainer", owner.ContainerID, "previousNetns", owner.Netns)
	return owner, nil
}

// inspectReturned is inspect, waiting (bounded) for the netdev of a VF taken over from a
// vanished netns: the kernel returns it to the host in a workqueue, so right after the netns
// went away it may not be there yet.
func (p *Plugin) inspectReturned(addr string, takenOver bool) (*vfInfo, error) {
	v, err := p.inspect(addr)
	for deadline := time.Now().Add(netdevReturnWait); err != nil && takenOver && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		v, err = p.inspect(addr)
	}
	return v, err
}

// originalSettings is what DEL puts back: the VF's admin settings on the PF (admin, nil when
// the PF does not report the VF) and its netdev as it is now; or, for a VF taken over, what the
// stale owner's record kept from before its pod.
func originalSettings(log *slog.Logger, m *vfmanager.Manager, conf *NetConf, v *vfInfo, stale *Owner) (*vfmanager.VFState, Original, error) {
	admin, err := readOriginalAdmin(log, m, conf, v)
	if err != nil {
		return nil, Original{}, err
	}
	orig := Original{Admin: admin}
	if !v.dpdk {
		l, err := netlinksafe.LinkByName(v.netdevs[0])
		if err != nil {
			return nil, Original{}, fmt.Errorf("sriov: vf %s: netdev %s: %w", v.addr, v.netdevs[0], err)
		}
		orig.Netdev, orig.MAC, orig.MTU = l.Attrs().Name, l.Attrs().HardwareAddr.String(), l.Attrs().MTU
		orig.Up = l.Attrs().Flags&netFlagUp != 0
		orig.NetdevID = netdevIdentity(l)
	}
	if stale != nil {
		if stale.Original.Admin != nil || admin == nil {
			orig.Admin = stale.Original.Admin
		}
		if stale.Original.Netdev != "" {
			orig.Netdev, orig.MAC, orig.MTU, orig.Up = stale.Original.Netdev, stale.Original.MAC, stale.Original.MTU, stale.Original.Up
		}
	}
	return admin, orig, nil
}

// newCache is the attachment's record, everything its DEL needs.
func newCache(conf *NetConf, a Args, v *vfInfo, orig Original) *Cache {
	c := &Cache{ContainerID: a.ContainerID, IfName: a.IfName, Netns: a.Netns, Network: conf.Name,
		NetConf: a.StdinData, CNIArgs: a.Args, VF: v.addr, PF: v.pf, PFNetdev: v.pfNetdev, VFIndex: v.index,
		DPDK: v.dpdk, Driver: v.driver, Original: orig}
	if conf.EffectiveMAC != nil {
		c.MAC = conf.EffectiveMAC.String()
	}
	return c
}

// record writes the attachment's cache, then the VF's ownership record (the cache goes again
// when that fails). forget removes both, for an ADD that failed and was undone.
func (st store) record(c *Cache, owner *Owner) (forget func(), err error) {
	cachePath, ownerPath := st.cachePath(c.ContainerID, c.IfName), st.ownerPath(c.VF)
	if err := writeJSON(cachePath, c); err != nil {
		return nil, fmt.Errorf("sriov: vf %s: %w", c.VF, err)
	}
	if err := writeJSON(ownerPath, owner); err != nil {
		_ = removeFile(cachePath)
		return nil, fmt.Errorf("sriov: vf %s: %w", c.VF, err)
	}
	return func() {
		_ = removeFile(ownerPath)
		_ = removeFile(cachePath)
	}, nil
}

// configurePF resets what a stale owner left on the VF, then applies the netconf's admin
// settings, through the PF.
func (p *Plugin) configurePF(m *vfmanager.Manager, conf *NetConf, v *vfInfo, admin *vfmanager.VFState, orig Original, stale *Owner) error {
	if stale != nil && orig.Admin != nil {
		if err := p.pfOp(v.pf, func() error { return m.RestoreVF(v.pfNetdev, v.index, *orig.Admin) }); err != nil {
			return fmt.Errorf("sriov: vf %s: reset settings left by container %s: %w", v.addr, stale.ContainerID, err)
		}
	}
	if conf.HasAdminSettings() && admin != nil {
		if err := p.pfOp(v.pf, func() error { return m.ApplyVF(v.pfNetdev, v.index, conf.VF) }); err != nil {
			return fmt.Errorf("sriov: vf %s: %w", v.addr, err)
		}
	}
	return nil
}

// plug gives the VF to the pod: in DPDK mode there is nothing to move (the result names the
// device); else its netdev moves into the pod's netns as ifName. inPod is the name the VF has
// in the pod so far, also on failure; podNS, when not nil, is the caller's to close.
func (p *Plugin) plug(conf *NetConf, a Args, v *vfInfo, c *Cache, admin *vfmanager.VFState) (iface *current.Interface, podNS ns.NetNS, inPod string, err error) {
	if v.dpdk {
		mac := c.MAC
		if mac == "" && admin != nil && admin.MAC != "00:00:00:00:00:00" {
			mac = admin.MAC
		}
		return ifaceResult(a.IfName, mac, "", v.addr), nil, "", nil
	}
	if podNS, err = ns.GetNS(a.Netns); err != nil {
		return nil, nil, "", fmt.Errorf("sriov: vf %s: pod netns %q: %w", v.addr, a.Netns, err)
	}
	mac, inPod, err := p.moveIn(v, conf, a.IfName, podNS)
	if err != nil {
		return nil, podNS, inPod, err
	}
	return ifaceResult(a.IfName, mac, a.Netns, v.addr), podNS, inPod, nil
}

// assignIPs runs the IPAM plugin and puts its addresses on the pod's interface (podNS nil: DPDK
// mode, the result only). release gives the lease back, under a context of its own.
func assignIPs(ctx context.Context, log *slog.Logger, conf *NetConf, a Args, v *vfInfo, podNS ns.NetNS, res *current.Result) (release func(), err error) {
	release = func() {
		if _, derr := execIPAM(context.WithoutCancel(ctx), "DEL", conf.IPAM.Type, a, a.StdinData); derr != nil {
			log.Error("undo: release IPAM", "err", derr)
		}
	}
	ir, err := ipamAdd(ctx, conf, a, a.StdinData)
	if err != nil {
		// An IPAM ADD that failed, or was killed by a cancelled call (the shim hung up), may
		// have taken its lease already, and no cache names it for the runtime's DEL: give it
		// back now (an IPAM DEL of nothing is a no-op).
		release()
		return nil, fmt.Errorf("sriov: vf %s: %w", v.addr, err)
	}
	for _, ip := range ir.IPs {
		ip.Interface = current.Int(0)
	}
	res.IPs, res.Routes, res.DNS = ir.IPs, ir.Routes, ir.DNS
	if podNS != nil {
		if err := podNS.Do(func(ns.NetNS) error { return ipam.ConfigureIface(a.IfName, res) }); err != nil {
			release()
			return nil, fmt.Errorf("sriov: vf %s: configure %s in %s: %w", v.addr, a.IfName, a.Netns, err)
		}
	}
	return release, nil
}

// settledMAC reads the interface's MAC, waiting (bounded) for a requested one to show: iavf
// applies a MAC through the PF's mailbox after the call has returned, so the first read can
// still show the old one. Halfway it asks again, as the driver may have dropped the request.
func settledMAC(vf, ifName string, want net.HardwareAddr) (string, error) {
	const wait, step = 2 * time.Second, 50 * time.Millisecond
	asked := false
	for start := time.Now(); ; time.Sleep(step) {
		l, err := netlinksafe.LinkByName(ifName)
		if err != nil {
			return "", fmt.Errorf("sriov: vf %s: %s: %w", vf, ifName, err)
		}
		mac := l.Attrs().HardwareAddr.String()
		if want == nil || mac == want.String() {
			return mac, nil
		}
		if time.Since(start) > wait {
			return "", fmt.Errorf("sriov: vf %s: %s has mac %s %s after setting %s", vf, ifName, mac, wait, want)
		}
		if !asked && time.Since(start) > wait/2 {
			asked = true
			if err := netlink.LinkSetHardwareAddr(l, want); err != nil {
				return "", fmt.Errorf("sriov: vf %s: set %s mac %s: %w", vf, ifName, want, err)
			}
		}
	}
}

// release puts the VF back as it was before the attachment: admin settings first (some drivers
// refuse changes to a VF whose trust was dropped or whose netdev is gone), then the netdev
// back into the host with its name, MAC and MTU. It tries every step and returns all failures.
//
// ifNameIsOurs says the pod's interface c.IfName is the VF (after a completed ADD); otherwise
// only the temporary name is looked for in the pod, so a pod's own interface of that name is
// never taken.
func (p *Plugin) release(log *slog.Logger, m *vfmanager.Manager, c *Cache, netnsPath string, ifNameIsOurs bool) []error {
	var errs []error
	if c.Original.Admin != nil && !p.Sys.Exists(c.VF) {
		// VFs removed (sriov_numvfs lowered, a reboot before they are created again): their
		// settings went with them, and failing here would fail DEL forever.
		log.Warn("VF no longer exists; no admin settings to restore", "vf", c.VF, "pf", c.PF)
	} else if c.Original.Admin != nil {
		pfNetdev := c.PFNetdev
		if nds, err := p.Sys.Netdevs(c.PF); err == nil && len(nds) > 0 {
			pfNetdev = nds[0] // the PF may have been renamed since ADD (a reboot)
		}
		if err := p.pfOp(c.PF, func() error { return m.RestoreVF(pfNetdev, c.VFIndex, *c.Original.Admin) }); err != nil {
			errs = append(errs, fmt.Errorf("sriov: vf %s: restore settings: %w", c.VF, err))
		}
	}
	if !c.DPDK {
		var podNS ns.NetNS
		if netnsPath != "" && netnsAlive(netnsPath) {
			if n, err := ns.GetNS(netnsPath); err == nil {
				podNS = n
				defer n.Close()
			}
		}
		if err := p.returnNetdev(log, c, podNS, ifNameIsOurs); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// findOurs returns the first of the named links in the current netns that can be the VF: a link
// whose parent device the kernel reports must be the VF itself (a pod may have reused the name).
func findOurs(c *Cache, names ...string) netlink.Link {
	for _, n := range names {
		l, err := netlinksafe.LinkByName(n)
		if err != nil {
			continue
		}
		if pd := l.Attrs().ParentDev; pd != "" && pd != c.VF {
			continue
		}
		return l
	}
	return nil
}

var parseMAC = net.ParseMAC

// netdevReturnWait bounds the wait for a VF netdev coming back from a destroyed netns.
var netdevReturnWait = 5 * time.Second

const netFlagUp = net.FlagUp

// ownerFromCaches stands in for a VF's corrupt ownership record, which would otherwise block
// every ADD of the VF: the record is quarantined and the attachment caches say who holds the
// VF (the usual in-use and stale-owner rules then apply). When none does, the VF is taken as
// free, and the problem that its settings from before may be lost is recorded.
func (p *Plugin) ownerFromCaches(log *slog.Logger, vf string, reason error) (*Owner, error) {
	st := p.store()
	caches, err := st.allCaches(log)
	if err != nil {
		return nil, fmt.Errorf("sriov: vf %s: ownership record %w; attachment caches: %w", vf, reason, err)
	}
	for _, c := range caches {
		if c.VF == vf {
			st.quarantine(log, st.ownerPath(vf), reason, Problem{VF: vf, ContainerID: c.ContainerID, IfName: c.IfName,
				Left: "none: the holder's attachment cache stands in for the record"})
			return &Owner{ContainerID: c.ContainerID, IfName: c.IfName, Netns: c.Netns, Network: c.Network, Original: c.Original}, nil
		}
	}
	st.quarantine(log, st.ownerPath(vf), reason, Problem{VF: vf,
		Left: "no attachment holds the VF: it was taken as free, and the settings it had before its last pod may be lost"})
	return nil, nil
}
