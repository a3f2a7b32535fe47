package meta

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/multinet-io/multinet/internal/netnstest"
	"github.com/multinet-io/multinet/pci"
)

// hostViewNode is a node netns with its uplink up0 (the IPv4 default route) and a spare link
// up1 (veths: the dummy driver is absent on some CI kernels) a tenant macvlan may attach to; fn runs in it with a HostViews subscribed there.
func hostViewNode(t *testing.T, fn func(h *HostViews, addMacvlan func() error)) {
	netnstest.RequireRoot(t)
	host := netnstest.New(t)
	sys := pci.New(t.TempDir())
	conf := &Config{}
	// One tenant ADD's policy check of a macvlan NAD on up1, as enforcePolicy runs it.
	addMacvlan := func(h *HostViews) func() error {
		return func() error {
			d := &Delegate{Name: "tenant/mv", Conf: []byte(`{"plugins":[{"type":"macvlan","master":"up1"}]}`)}
			c := nadCheck{pod: podWith(""), nad: "tenant/mv", namespace: "tenant", d: d}
			return conf.Policy.checkNAD(c, &lazyHost{conf: conf, sys: sys, views: h})
		}
	}
	err := host.Do(func(ns.NetNS) error {
		for _, n := range []string{"up0", "up1"} {
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: n}, PeerName: n + "p"}); err != nil {
				return err
			}
			l, _ := netlink.LinkByName(n)
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		up0, _ := netlink.LinkByName("up0")
		a, _ := netlink.ParseAddr("192.0.2.2/24")
		if err := netlink.AddrAdd(up0, a); err != nil {
			return err
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: up0.Attrs().Index, Gw: net.ParseIP("192.0.2.1")}); err != nil {
			return err
		}
		h, err := NewHostViews()
		if err != nil {
			return err
		}
		defer h.Close()
		fn(h, addMacvlan(h))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (h *HostViews) readCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.reads
}

// settle waits until watch consumed every queued message (it bumps the generation in the
// same critical section).
func (h *HostViews) settle(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		h.mu.Lock()
		pending := !h.broken && h.pendingLocked()
		h.mu.Unlock()
		if !pending {
			return
		}
	}
	t.Fatal("host view subscription never drained")
}

// routeUp1 makes up1 carry a default route (table 100: policy routing on the node).
func routeUp1() error {
	up1, _ := netlink.LinkByName("up1")
	a, _ := netlink.ParseAddr("198.51.100.2/24")
	if err := netlink.AddrAdd(up1, a); err != nil {
		return err
	}
	return netlink.RouteAdd(&netlink.Route{LinkIndex: up1.Attrs().Index, Gw: net.ParseIP("198.51.100.1"), Table: 100})
}

// The cached view serves ADDs until the host changes; the ADD right after up1 became a
// default-route link (no wait for the event to be handled) is refused.
func TestHostViewsNewDefaultRouteLinkRefusedByNextADD(t *testing.T) {
	hostViewNode(t, func(h *HostViews, add func() error) {
		for i := 0; i < 3; i++ {
			if err := add(); err != nil {
				t.Fatalf("ADD %d: macvlan on the spare link up1: %v", i, err)
			}
		}
		h.settle(t)
		if err := add(); err != nil {
			t.Fatal(err)
		}
		if n := h.readCount(); n != 1 {
			t.Errorf("4 ADDs on an unchanged host read it %d times, want the cached view", n)
		}
		if err := routeUp1(); err != nil {
			t.Fatal(err)
		}
		err := add()
		if err == nil || !strings.Contains(err.Error(), "up1 carries the node's IPv4 default route; no NAD may attach to it") {
			t.Fatalf("ADD after up1 got a default route: %v, want refused", err)
		}
		h.settle(t) // the event handled: the view cached since must have it too
		for i := 0; i < 2; i++ {
			if err := add(); err == nil {
				t.Fatalf("ADD %d once the event was handled: allowed, want refused", i)
			}
		}
	})
}

// A burst of changes costs one read of the host on the next ADD, not one per event.
func TestHostViewsEventsCoalesce(t *testing.T) {
	hostViewNode(t, func(h *HostViews, add func() error) {
		if err := add(); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 40; i++ {
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("pad%d", i)}, PeerName: fmt.Sprintf("padp%d", i)}); err != nil {
				t.Fatal(err)
			}
		}
		h.settle(t)
		before := h.readCount()
		for i := 0; i < 3; i++ {
			if err := add(); err != nil {
				t.Fatal(err)
			}
		}
		if got := h.readCount() - before; got != 1 {
			t.Errorf("3 ADDs after 80 new links read the host %d times, want 1", got)
		}
	})
}

// Messages the kernel dropped (the subscription's buffer overflowed while it was not read)
// still invalidate the view.
func TestHostViewsOverflowInvalidates(t *testing.T) {
	hostViewNode(t, func(h *HostViews, add func() error) {
		if err := add(); err != nil {
			t.Fatal(err)
		}
		if err := unix.SetsockoptInt(h.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 1); err != nil {
			t.Fatal(err)
		}
		h.mu.Lock() // watch cannot drain meanwhile
		var err error
		for i := 0; i < 20 && err == nil; i++ {
			err = netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("pad%d", i)}, PeerName: fmt.Sprintf("padp%d", i)})
		}
		if err == nil {
			err = routeUp1()
		}
		h.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if err := add(); err == nil || !strings.Contains(err.Error(), "up1 carries the node's IPv4 default route") {
			t.Fatalf("ADD after an overflow that dropped the route's event: %v, want refused", err)
		}
	})
}

// Once the subscription failed (what watch does on a receive error), every ADD reads the host.
func TestHostViewsFallbackWhenSubscriptionFails(t *testing.T) {
	hostViewNode(t, func(h *HostViews, add func() error) {
		if err := add(); err != nil {
			t.Fatal(err)
		}
		h.fail()
		before := h.readCount()
		for i := 0; i < 2; i++ {
			if err := add(); err != nil {
				t.Fatal(err)
			}
		}
		if got := h.readCount() - before; got != 2 {
			t.Errorf("2 ADDs without a subscription read the host %d times, want 2", got)
		}
		if err := routeUp1(); err != nil {
			t.Fatal(err)
		}
		if err := add(); err == nil || !strings.Contains(err.Error(), "up1 carries the node's IPv4 default route") {
			t.Fatalf("ADD after up1 got a default route, no subscription: %v, want refused", err)
		}
	})
}
