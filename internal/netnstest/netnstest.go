// Package netnstest holds the network-namespace fixtures the netns tests of several packages
// share (agent, meta, deviceplugin, sriovcni, doctor): a namespace removed when the test ends,
// a handle bound to it, the interfaces a user would list in a pod, padding links and link
// churn.
package netnstest

import (
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// RequireRoot skips the test unless it runs as root (it creates namespaces and links).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and links")
	}
}

// New is a fresh network namespace, closed and unmounted when the test ends.
func New(t testing.TB) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(); testutils.UnmountNS(n) })
	return n
}

// Handle is a netlink handle bound to n, closed when the test ends.
func Handle(t testing.TB, n ns.NetNS) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(netns.NsHandle(n.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// Links returns n's interfaces but lo, each with its IPv4 addresses, as `ip addr` there shows.
func Links(t testing.TB, n ns.NetNS) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	err := n.Do(func(ns.NetNS) error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if l.Attrs().Name == "lo" {
				continue
			}
			addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
			ips := []string{}
			for _, a := range addrs {
				ips = append(ips, a.IP.String())
			}
			out[l.Attrs().Name] = ips
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Pad adds count veth pairs through h: enough links that a link dump spans several netlink
// messages.
func Pad(t testing.TB, h *netlink.Handle, count int) {
	t.Helper()
	for i := 0; i < count; i++ {
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("pad%d", i)}, PeerName: fmt.Sprintf("padp%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
}

// Churn adds and deletes veth pairs through h until the test ends: the state of a namespace
// while many pods attach at once, where the kernel marks dumps interrupted (NLM_F_DUMP_INTR).
func Churn(t testing.TB, h *netlink.Handle) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			name := fmt.Sprintf("churn%d", i%4)
			h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"})
			if l, err := h.LinkByName(name); err == nil {
				h.LinkDel(l)
			}
		}
	}()
	t.Cleanup(func() { close(stop); wg.Wait() })
}

// Veths adds a veth pair per name in n (the named end in n, its peer <name>p beside it): what
// the tests use for PF and VF netdevs, the dummy driver being absent on some CI kernels. It
// returns each named link's MAC.
func Veths(t testing.TB, n ns.NetNS, names ...string) map[string]string {
	t.Helper()
	h := Handle(t, n)
	macs := map[string]string{}
	for _, name := range names {
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
			t.Fatalf("veth %s: %v", name, err)
		}
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatalf("veth %s: %v", name, err)
		}
		macs[name] = l.Attrs().HardwareAddr.String()
	}
	return macs
}
