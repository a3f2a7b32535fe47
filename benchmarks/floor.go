package benchmarks

import (
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Floor does, in one process and without IPAM files, API calls or plugin execs, the netlink
// operations an attachment needs: a veth to a bridge for eth0, a VF netdev moved into the pod
// and renamed, a macvlan on eth0; each brought up with an address. Its time is what the kernel
// charges; everything above it is the stacks' overhead.
type Floor struct {
	node   *Node
	host   netns.NsHandle
	bridge netlink.Link
	macs   map[string]string // VF netdev -> its MAC, to find it in a pod after a failed DEL
	next   atomic.Uint32
}

func (f *Floor) setup() error {
	var err error
	if f.host, err = netns.Get(); err != nil {
		return err
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "floorbr0"}}
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("floor bridge: %w", err)
	}
	if f.bridge, err = netlinksafe.LinkByName("floorbr0"); err != nil {
		return err
	}
	addr, _ := netlink.ParseAddr("10.250.0.1/16")
	if err := netlink.AddrAdd(f.bridge, addr); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(f.bridge); err != nil {
		return err
	}
	f.macs = map[string]string{}
	for _, name := range f.node.VFNetdevs {
		l, err := netlinksafe.LinkByName(name)
		if err != nil {
			return err
		}
		f.macs[name] = l.Attrs().HardwareAddr.String()
	}
	return nil
}

func (f *Floor) addr(base string) *netlink.Addr {
	n := f.next.Add(1)
	a, _ := netlink.ParseAddr(fmt.Sprintf("%s.%d.%d/16", base, n/250%250, 1+n%250))
	return a
}

func (f *Floor) add(p *pod, sc Scenario) (time.Duration, error) {
	start := time.Now()
	err := f.doAdd(p, sc)
	return time.Since(start), err
}

func (f *Floor) doAdd(p *pod, sc Scenario) error {
	// The namespace fd also places eth0's peer, so doAdd keeps it open.
	target, err := netns.GetFromPath(p.ns.Path())
	if err != nil {
		return err
	}
	defer target.Close()
	h, err := netlink.NewHandleAt(target)
	if err != nil {
		return err
	}
	defer h.Close()
	// eth0: veth created with its peer already in the pod, host end on the bridge.
	hostName := "fl" + strings.TrimPrefix(p.uid, "floor-")
	if len(hostName) > 15 {
		hostName = fmt.Sprintf("fl%08x", f.next.Add(1))
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostName, MasterIndex: f.bridge.Attrs().Index},
		PeerName: "eth0", PeerNamespace: netlink.NsFd(target)}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("floor eth0: %w", err)
	}
	if err := netlink.LinkSetUp(veth); err != nil {
		return err
	}
	if err := upWithAddr(h, "eth0", f.addr("10.250")); err != nil {
		return err
	}
	gw := net.ParseIP("10.250.0.1")
	eth0, _ := h.LinkByName("eth0")
	if err := h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: gw}); err != nil {
		return fmt.Errorf("floor default route: %w", err)
	}
	vf := 0
	for i, n := range strings.Split(sc.Networks, ",") {
		ifname := fmt.Sprintf("net%d", i+1)
		switch {
		case n == "":
			continue
		case strings.HasPrefix(n, "sriov"):
			l, err := netlinksafe.LinkByName(f.node.VFNetdevs[p.vfs[vf]])
			if err != nil {
				return err
			}
			vf++
			if err := netlink.LinkSetNsFd(l, int(target)); err != nil {
				return err
			}
			if err := h.LinkSetName(l, ifname); err != nil {
				return err
			}
			if err := upWithAddr(h, ifname, f.addr("10.251")); err != nil {
				return err
			}
		default:
			eth, _ := netlinksafe.LinkByName("eth0")
			mv := &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("flm%06x", f.next.Add(1)), ParentIndex: eth.Attrs().Index,
				Namespace: netlink.NsFd(target)}, Mode: netlink.MACVLAN_MODE_BRIDGE}
			if err := netlink.LinkAdd(mv); err != nil {
				return fmt.Errorf("floor macvlan: %w", err)
			}
			l, err := h.LinkByName(mv.Name)
			if err != nil {
				return err
			}
			if err := h.LinkSetName(l, ifname); err != nil {
				return err
			}
			if err := upWithAddr(h, ifname, f.addr("10.252")); err != nil {
				return err
			}
		}
	}
	return nil
}

func upWithAddr(h *netlink.Handle, name string, a *netlink.Addr) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return err
	}
	if err := h.AddrAdd(l, a); err != nil {
		return fmt.Errorf("%s: addr %s: %w", name, a, err)
	}
	return h.LinkSetUp(l)
}

func (f *Floor) del(p *pod, sc Scenario) (time.Duration, error) {
	start := time.Now()
	err := f.doDel(p, sc)
	return time.Since(start), err
}

func (f *Floor) doDel(p *pod, sc Scenario) error {
	h, err := podHandle(p)
	if err != nil {
		return err
	}
	defer h.Close()
	nets := strings.Split(sc.Networks, ",")
	vf := 0
	for i := range nets {
		if nets[i] == "" {
			continue
		}
		l, err := h.LinkByName(fmt.Sprintf("net%d", i+1))
		if err != nil {
			return err
		}
		if strings.HasPrefix(nets[i], "sriov") {
			if err := h.LinkSetDown(l); err != nil {
				return err
			}
			if err := h.LinkSetName(l, f.node.VFNetdevs[p.vfs[vf]]); err != nil {
				return err
			}
			vf++
			if err := h.LinkSetNsFd(l, int(f.host)); err != nil {
				return err
			}
			continue
		}
		if err := h.LinkDel(l); err != nil {
			return err
		}
	}
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		return err
	}
	return h.LinkDel(eth0)
}

// rescue brings a pod's VFs back to the host after a failed DEL: a veth-backed VF would
// otherwise be destroyed with the pod's netns and the pool would shrink.
func (f *Floor) rescue(p *pod) {
	var lost []string
	for _, addr := range p.vfs {
		name := f.node.VFNetdevs[addr]
		if _, err := netlinksafe.LinkByName(name); err != nil {
			lost = append(lost, name)
		}
	}
	if len(lost) == 0 {
		return
	}
	h, err := podHandle(p)
	if err != nil {
		return
	}
	defer h.Close()
	links, _ := h.LinkList()
	for _, name := range lost {
		for _, l := range links {
			if l.Attrs().HardwareAddr.String() == f.macs[name] && l.Type() == "veth" {
				h.LinkSetDown(l)
				h.LinkSetName(l, name)
				h.LinkSetNsFd(l, int(f.host))
				if hl, err := netlinksafe.LinkByName(name); err == nil {
					netlink.LinkSetUp(hl)
				}
			}
		}
	}
}

// rescueAll recreates VF netdevs that were lost anyway, so the next scenario has its pool.
func (f *Floor) rescueAll() error {
	for _, name := range f.node.VFNetdevs {
		if _, err := netlinksafe.LinkByName(name); err == nil {
			continue
		}
		if err := addVeth(name); err != nil {
			return err
		}
		l, _ := netlinksafe.LinkByName(name)
		f.macs[name] = l.Attrs().HardwareAddr.String()
	}
	return nil
}

// podHandle opens a netlink handle in the pod's namespace (the namespace fd is only needed to
// create it).
func podHandle(p *pod) (*netlink.Handle, error) {
	target, err := netns.GetFromPath(p.ns.Path())
	if err != nil {
		return nil, err
	}
	defer target.Close()
	return netlink.NewHandleAt(target)
}
