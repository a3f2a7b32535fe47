package deviceplugin

import (
	"net"
	"os"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/pci/pcitest"
)

// The uplink rule on real routes: in a namespace standing in for the host, the NIC whose netdev
// carries the IPv4 default route is left out of every pool; a NIC without it is pooled.
func TestDefaultRouteNICNotPooled(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace, veth links and routes")
	}
	host, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Close(); testutils.UnmountNS(host) })

	tr := pcitest.New(t)
	tr.AddNIC(pcitest.NIC{Address: "0000:00:03.0", Vendor: "8086", Device: "15bb", Driver: "e1000e", Netdev: "mnup0", NUMANode: -1})
	tr.AddNIC(pcitest.NIC{Address: "0000:00:04.0", Vendor: "8086", Device: "15bb", Driver: "e1000e", Netdev: "mndata0", NUMANode: -1})
	d := &Discoverer{Sys: pci.New(tr.Root)} // nil DefaultRouteLinks: the namespace's routes

	var got []*Device
	err = host.Do(func(ns.NetNS) error {
		for _, name := range []string{"mnup0", "mndata0"} {
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
				return err
			}
			l, _ := netlink.LinkByName(name)
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		up, _ := netlink.LinkByName("mnup0")
		addr, _ := netlink.ParseAddr("192.0.2.2/24")
		if err := netlink.AddrAdd(up, addr); err != nil {
			return err
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index, Gw: net.ParseIP("192.0.2.1")}); err != nil {
			return err
		}
		found, err := d.Discover(mustParse(t, `{"resourceList":[{"resourceName":"nics","selectors":{"vendors":["8086"]}}]}`))
		got = found["intel.com/nics"]
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if g := ids(got); len(g) != 1 || g[0] != "0000:00:04.0" {
		t.Errorf("pool = %v, want only 0000:00:04.0 (0000:00:03.0's mnup0 carries the default route)", g)
	}
}
