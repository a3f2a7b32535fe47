package meta

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

// churnNS is a pod netns with two interfaces, each with a default route, and enough routes that a
// route dump spans many netlink messages, while a goroutine adds and deletes routes in it: the
// state of a pod's netns while many pods attach at once and the kernel sets NLM_F_DUMP_INTR.
func churnNS(t *testing.T) (ns.NetNS, *netlink.Handle) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
	pod := netnstest.New(t)
	h := netnstest.Handle(t, pod)
	for i, name := range []string{"net1", "net2"} {
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
			t.Fatal(err)
		}
		l, _ := h.LinkByName(name)
		p, _ := h.LinkByName(name + "p")
		h.LinkSetUp(p)
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		addr, _ := netlink.ParseAddr([]string{"10.1.0.2/24", "10.2.0.2/24"}[i])
		if err := h.AddrAdd(l, addr); err != nil {
			t.Fatal(err)
		}
	}
	netnstest.Pad(t, h, 150)
	netnstest.Churn(t, h)
	return pod, h
}

// The route fix-up and the gateways of network-status under link churn: a plain link dump is
// interrupted (the precondition, else the test proves nothing) and the fix-up, which used to
// fail the whole pod ADD on an interrupted dump, succeeds every time, leaves exactly one default
// route, and the pod's gateways are read (an interrupted dump left them unread).
func TestDefaultRoutesUnderChurn(t *testing.T) {
	pod, h := churnNS(t)
	interrupted := false
	func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		plain, _ := netlink.NewHandleAt(netns.NsHandle(pod.Fd()))
		defer plain.Close()
		for start := time.Now(); !interrupted && time.Since(start) < 10*time.Second; {
			_, err := plain.LinkList()
			interrupted = errors.Is(err, netlink.ErrDumpInterrupted)
		}
	}()
	if !interrupted {
		t.Fatal("precondition: the link churn never interrupted a plain link dump")
	}
	p := &Plugin{}
	ds := []Delegate{{Name: "cluster", IfName: "net1", IsDefault: true}, {Name: "tenant", IfName: "net2"}}
	for i := 0; i < 40; i++ {
		for j, name := range []string{"net1", "net2"} {
			l, _ := h.LinkByName(name)
			gw := net.IPv4(10, byte(j+1), 0, 1)
			h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw, Priority: 100 + j})
		}
		if err := p.fixDefaultRoutes(pod.Path(), ds); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 254}, netlink.RT_FILTER_TABLE)
		for errors.Is(err, netlink.ErrDumpInterrupted) { // the check needs a consistent list
			routes, err = h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 254}, netlink.RT_FILTER_TABLE)
		}
		if err != nil {
			t.Fatal(err)
		}
		var defaults []string
		for _, r := range routes {
			if isDefault(r) {
				defaults = append(defaults, r.Gw.String())
			}
		}
		if len(defaults) != 1 || defaults[0] != "10.1.0.1" {
			t.Fatalf("round %d: default routes %v, want only the cluster network's via 10.1.0.1", i, defaults)
		}
		if gws := podGateways(pod.Path()); len(gws["net1"]) != 1 || gws["net1"][0] != "10.1.0.1" {
			t.Fatalf("round %d: pod gateways %v, want net1 via 10.1.0.1", i, gws)
		}
	}
}
