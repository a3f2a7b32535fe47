package meta

import (
	"fmt"
	"net"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// fixDefaultRoutes leaves at most one default route per IP family in the pod: on the
// interface whose selection asked for it with default-route (through the requested gateway),
// else on the cluster network's, else, when the cluster network has none of that family (an
// IPv6 attachment on an IPv4-only cluster network), on the first attachment that has one.
// Delegates each install their own (the seed's macvlan-conf routes 0.0.0.0/0), and two default
// routes make the pod's egress depend on route order.
func (p *Plugin) fixDefaultRoutes(netnsPath string, ds []Delegate) error {
	if netnsPath == "" || len(ds) < 2 {
		return nil
	}
	want := map[int]string{} // family -> ifname that keeps the default route
	gw := map[int]net.IP{}   // family -> requested gateway
	for _, d := range ds {
		for _, g := range d.DefaultRoute {
			ip := net.ParseIP(g)
			want[familyOf(ip)], gw[familyOf(ip)] = d.IfName, ip
		}
	}
	netns, err := ns.GetNS(netnsPath)
	if err != nil {
		return fmt.Errorf("default routes: %w", err)
	}
	defer netns.Close()
	return netns.Do(func(ns.NetNS) error {
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			routes, err := netlinksafe.RouteListFiltered(fam, &netlink.Route{Table: 254}, netlink.RT_FILTER_TABLE)
			if err != nil {
				return fmt.Errorf("default routes: list: %w", err)
			}
			var defaults []netlink.Route
			byLink := map[int]bool{}
			for _, r := range routes {
				if isDefault(r) {
					defaults = append(defaults, r)
					byLink[r.LinkIndex] = true
				}
			}
			keep, requested := want[fam]
			if !requested {
				// The cluster network's, else the first attachment's (in the pod's order) that has one.
				for _, d := range ds {
					if l, err := netlinksafe.LinkByName(d.IfName); err == nil && byLink[l.Attrs().Index] {
						keep = d.IfName
						break
					}
				}
				if keep == "" {
					continue // no default route of this family at all
				}
			}
			keepLink, err := netlinksafe.LinkByName(keep)
			if err != nil {
				return fmt.Errorf("default route: interface %s: %w", keep, err)
			}
			have := false
			for _, r := range defaults {
				if r.LinkIndex == keepLink.Attrs().Index && (!requested || r.Gw.Equal(gw[fam])) {
					have = true
					continue
				}
				if err := netlink.RouteDel(&r); err != nil {
					return fmt.Errorf("default route via %s: delete: %w", r.Gw, err)
				}
			}
			if requested && !have {
				r := &netlink.Route{LinkIndex: keepLink.Attrs().Index, Gw: gw[fam]}
				if err := netlink.RouteAdd(r); err != nil {
					return fmt.Errorf("default-route %s on %s: %w", gw[fam], keep, err)
				}
			}
		}
		return nil
	})
}

func familyOf(ip net.IP) int {
	if ip.To4() != nil {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func isDefault(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0 && r.Dst.IP.IsUnspecified()
}

// podGateways returns, for each interface in the pod, the gateways of its default routes as
// they are after fixDefaultRoutes (an empty list for an interface without one; "" for a default
// route without a next hop). nil when the netns cannot be read: the results' gateways stand.
func podGateways(netnsPath string) map[string][]string {
	if netnsPath == "" {
		return nil
	}
	netns, err := ns.GetNS(netnsPath)
	if err != nil {
		return nil
	}
	defer netns.Close()
	var out map[string][]string
	_ = netns.Do(func(ns.NetNS) error {
		links, err := netlinksafe.LinkList()
		if err != nil {
			return err
		}
		routes, err := netlinksafe.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: 254}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}
		names := map[int]string{}
		m := map[string][]string{}
		for _, l := range links {
			names[l.Attrs().Index] = l.Attrs().Name
			m[l.Attrs().Name] = []string{}
		}
		for _, r := range routes {
			if name, ok := names[r.LinkIndex]; ok && isDefault(r) {
				gw := ""
				if r.Gw != nil {
					gw = r.Gw.String()
				}
				m[name] = append(m[name], gw)
			}
		}
		out = m
		return nil
	})
	return out
}
