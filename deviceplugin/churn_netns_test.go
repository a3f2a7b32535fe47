package deviceplugin

import (
	"errors"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/multinet-io/multinet/internal/netnstest"
)

// The uplink rule while links come and go on the node (pods attaching: veths created and
// deleted): a plain link dump is interrupted (the precondition), and HostDefaultRouteLinks,
// which then saw a partial link list, names the uplink every time.
func TestHostDefaultRouteLinksUnderLinkChurn(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace, veth links and routes")
	}
	host := netnstest.New(t)
	h := netnstest.Handle(t, host)
	// A bond-less uplink under a bridge: the rule must follow the bridge to its port, which
	// needs the port's entry in the link list.
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "mnbr0"}}); err != nil {
		t.Fatal(err)
	}
	br, _ := h.LinkByName("mnbr0")
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "mnup0", MasterIndex: br.Attrs().Index}, PeerName: "mnup0p"}); err != nil {
		t.Fatal(err)
	}
	netnstest.Pad(t, h, 150)
	h.LinkSetUp(br)
	addr, _ := netlink.ParseAddr("10.3.0.2/24")
	h.AddrAdd(br, addr)
	if err := h.RouteAdd(&netlink.Route{LinkIndex: br.Attrs().Index, Gw: net.IPv4(10, 3, 0, 1)}); err != nil {
		t.Fatal(err)
	}
	netnstest.Churn(t, h)

	interrupted := false
	func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		plain, _ := netlink.NewHandleAt(netns.NsHandle(host.Fd()))
		defer plain.Close()
		for start := time.Now(); !interrupted && time.Since(start) < 10*time.Second; {
			_, err := plain.LinkList()
			interrupted = errors.Is(err, netlink.ErrDumpInterrupted)
		}
	}()
	if !interrupted {
		t.Fatal("precondition: the link churn never interrupted a plain link dump")
	}
	for i := 0; i < 40; i++ {
		var got []string
		err := host.Do(func(ns.NetNS) error {
			var err error
			got, err = HostDefaultRouteLinks()
			return err
		})
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		has := map[string]bool{}
		for _, n := range got {
			has[n] = true
		}
		if !has["mnbr0"] || !has["mnup0"] {
			t.Fatalf("round %d: default-route links %v, want the bridge mnbr0 and its port mnup0", i, got)
		}
	}
}
