package sriovcni

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// A competing renamer in the host, as udev or NetworkManager applying their naming rules: on
// every link event it renames any netdev of the simulated VFs that is not under its own name
// (mnvfN) to a name of its own. The VF moves between the host and the pod 50 times under it:
// every ADD and DEL succeeds, the VF comes back under its name with its MAC, and the renamer
// never found the VF in the host under another name, which the old move through a temporary
// host name gave it on every ADD and DEL.
func TestVFRenameUnderCompetingRenamer(t *testing.T) {
	n := newNode(t)
	h, err := netlink.NewHandleAt(netns.NsHandle(n.host.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	updates, done := make(chan netlink.LinkUpdate, 1024), make(chan struct{})
	if err := netlink.LinkSubscribeAt(netns.NsHandle(n.host.Fd()), updates, done); err != nil {
		t.Fatal(err)
	}
	var renamed atomic.Int32
	var seen sync.Map
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for u := range updates {
			name := u.Attrs().Name
			if strings.HasPrefix(name, "mnvf") && len(name) > len("mnvf0") {
				// Not a VF's own name (mnvf0..mnvf2): the temporary name of a move.
				seen.Store(name, true)
				if h.LinkSetName(u.Link, "udev"+name[4:]) == nil {
					renamed.Add(1)
				}
			}
		}
	}()
	defer func() { close(done); wg.Wait() }()

	pod := n.pod()
	for i := 0; i < 50; i++ {
		a := n.args("c1", pod, n.conf("0000:00:12.0", "", `,"mac":"02:00:00:00:77:09"`))
		if _, err := n.add(a); err != nil {
			t.Fatalf("cycle %d: ADD: %v", i, err)
		}
		if l := link(t, pod, "net1"); l == nil || l.Attrs().HardwareAddr.String() != "02:00:00:00:77:09" {
			t.Fatalf("cycle %d: net1 in the pod: %v", i, l)
		}
		if err := n.del(a); err != nil {
			t.Fatalf("cycle %d: DEL: %v", i, err)
		}
		n.assertVFHome("mnvf0", pod)
		if t.Failed() {
			t.Fatalf("cycle %d", i)
		}
	}
	n.assertClean()
	var names []string
	seen.Range(func(k, _ any) bool { names = append(names, k.(string)); return true })
	if len(names) != 0 || renamed.Load() != 0 {
		t.Errorf("the host saw the VF under temporary names %v (%d renamed by the competitor)", names, renamed.Load())
	}
}
