package sriovcni

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"slices"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/multinet-io/multinet/devpools"
	"github.com/multinet-io/multinet/podresources"
)

// Pool check modes (Plugin.PoolCheck, MULTINET_SRIOV_POOL_CHECK). They are the node
// operator's, never a netconf's: a NAD's author must not be able to turn the check off.
const (
	// PoolCheckAuto refuses VFs in no pool when the device plugin publishes its pools file,
	// and allows any VF on a node without one (deviceIDs written into NADs, as upstream).
	PoolCheckAuto = "auto"
	// PoolCheckRequire refuses every VF when there is no pools file.
	PoolCheckRequire = "require"
	// PoolCheckOff allows any VF.
	PoolCheckOff = "off"
)

// EnvPoolCheck sets Plugin.PoolCheck for the CNI binary; EnvCheckpoint Plugin.Checkpoint.
const (
	EnvPoolCheck  = "MULTINET_SRIOV_POOL_CHECK"
	EnvCheckpoint = "MULTINET_KUBELET_CHECKPOINT"
)

// guard refuses a VF that is not this pod's to take, before anything on the host is touched:
// one the device plugin does not advertise, one kubelet gave another pod, or one whose netdev
// the host is using.
func (p *Plugin) guard(log *slog.Logger, v *vfInfo, a Args) error {
	if err := p.checkPool(log, v.addr); err != nil {
		return err
	}
	if err := p.checkKubelet(log, v.addr, cniArg(a.Args, "K8S_POD_UID")); err != nil {
		return err
	}
	if v.dpdk {
		return nil
	}
	l, err := netlinksafe.LinkByName(v.netdevs[0])
	if err != nil {
		return fmt.Errorf("sriov: vf %s: netdev %s: %w", v.addr, v.netdevs[0], err)
	}
	if why := hostUse(l); why != "" {
		return fmt.Errorf("sriov: vf %s: the host uses its netdev %s (%s); only a VF the host leaves alone can be given to a pod", v.addr, l.Attrs().Name, why)
	}
	return nil
}

func (p *Plugin) checkPool(log *slog.Logger, vf string) error {
	mode := p.PoolCheck
	switch mode {
	case PoolCheckOff:
		return nil
	case "", PoolCheckAuto, PoolCheckRequire:
	default:
		return fmt.Errorf("sriov: vf %s: %s %q: want %s, %s or %s", vf, EnvPoolCheck, mode, PoolCheckAuto, PoolCheckRequire, PoolCheckOff)
	}
	path := p.PoolsFile
	if path == "" {
		if mode == PoolCheckRequire {
			return fmt.Errorf("sriov: vf %s: pool check %q without a pools file", vf, mode)
		}
		return nil
	}
	f, err := devpools.Read(path)
	if errors.Is(err, fs.ErrNotExist) && mode != PoolCheckRequire {
		log.Debug("no device-plugin pools file; any VF may be attached", "file", path)
		return nil
	}
	if err != nil {
		return fmt.Errorf("sriov: vf %s: cannot tell whether it is in a device-plugin pool: %w", vf, err)
	}
	if f.PoolOf(vf) == "" {
		return fmt.Errorf("sriov: vf %s: in no device-plugin pool (%s): only devices the device plugin advertises can be attached", vf, path)
	}
	return nil
}

// checkKubelet refuses a VF kubelet's device manager allocated to another pod (a DPDK pod's
// vfio VF, which has no ownership record of ours). Without the pod's UID (a runtime that does
// not pass K8S_POD_UID) or the checkpoint, there is nothing to compare with.
func (p *Plugin) checkKubelet(log *slog.Logger, vf, podUID string) error {
	path := p.Checkpoint
	if path == "" || podUID == "" {
		return nil
	}
	owners, err := podresources.DeviceOwners(path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			log.Warn("cannot read kubelet's device checkpoint; not checking who kubelet gave the VF", "file", path, "err", err)
		}
		return nil
	}
	if uids := owners[vf]; len(uids) > 0 && !slices.Contains(uids, podUID) {
		return fmt.Errorf("sriov: vf %s: kubelet allocated it to pod %s, not to this pod %s", vf, strings.Join(uids, ","), podUID)
	}
	return nil
}

// hostUse says how the host uses a netdev, "" when it does not: up with addresses (IPv6
// link-local ones every up link gets do not count), enslaved to a bond, bridge or VRF, or the
// way out of a route that is not one the kernel derives from the link's own addresses.
func hostUse(l netlink.Link) string {
	a := l.Attrs()
	if a.MasterIndex != 0 {
		name := fmt.Sprint(a.MasterIndex)
		if m, err := netlink.LinkByIndex(a.MasterIndex); err == nil {
			name = m.Attrs().Name
		}
		return "enslaved to " + name
	}
	if a.Flags&net.FlagUp != 0 {
		addrs, _ := netlinksafe.AddrList(l, netlink.FAMILY_ALL)
		for _, ad := range addrs {
			if ad.IP.To4() == nil && ad.IP.IsLinkLocalUnicast() {
				continue
			}
			return "up with address " + ad.IPNet.String()
		}
	}
	routes, _ := netlinksafe.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	for _, r := range routes {
		if r.Protocol == unix.RTPROT_KERNEL || r.Table == unix.RT_TABLE_LOCAL {
			continue
		}
		via := r.LinkIndex == a.Index
		for _, nh := range r.MultiPath {
			via = via || nh.LinkIndex == a.Index
		}
		if via {
			dst := "default"
			if r.Dst != nil {
				dst = r.Dst.String()
			}
			return "carries the route " + dst
		}
	}
	return ""
}
