package meta

import (
	"fmt"
	"net"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// fixDefaultRoutes leaves at most one default route per IP family in the pod: on the
// interface whose selection asked for it with default-route, else on the cluster network's.
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
			fam := netlink.FAMILY_V6
			if ip.To4() != nil {
				fam = netlink.FAMILY_V4
			}
			want[fam], gw[fam] = d.IfName, ip
		}
	}
	clusterIf := ds[0].IfName
	netns, err := ns.GetNS(netnsPath)
	if err != nil {
		return fmt.Errorf("default routes: %w", err)
	}
	defer netns.Close()
	return netns.Do(func(ns.NetNS) error {
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			keep, ok := want[fam]
			if !ok {
				keep = clusterIf
			}
			keepLink, err := netlink.LinkByName(keep)
			if err != nil {
				return fmt.Errorf("default route: interface %s: %w", keep, err)
			}
			routes, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: 254}, netlink.RT_FILTER_TABLE)
			if err != nil {
				return fmt.Errorf("default routes: list: %w", err)
			}
			have := false
			for _, r := range routes {
				if !isDefault(r) {
					continue
				}
				if r.LinkIndex == keepLink.Attrs().Index {
					have = true
					continue
				}
				if err := netlink.RouteDel(&r); err != nil {
					return fmt.Errorf("default route via %s: delete: %w", r.Gw, err)
				}
			}
			if g := gw[fam]; g != nil && !have {
				r := &netlink.Route{LinkIndex: keepLink.Attrs().Index, Gw: g}
				if err := netlink.RouteAdd(r); err != nil {
					return fmt.Errorf("default-route %s on %s: %w", g, keep, err)
				}
			}
		}
		return nil
	})
}

func isDefault(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0 && r.Dst.IP.IsUnspecified()
}
