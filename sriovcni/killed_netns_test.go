package sriovcni

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// A move cut short by a kill (the node agent runs this plugin in-process and can be SIGKILLed
// at any point): the VF is in its pinned temporary netns, under its host name (an ADD cut after
// the move out of the host) or under the pod's name (a DEL cut after the move out of the pod).
// The runtime's DEL finds it there and puts it back as it was; no pin is left. An anonymous
// temporary netns would have died with the process, and with it the VF (a veth is destroyed, a
// physical VF goes to the initial netns, late).
func TestDelFindsVFInTempNetnsOfAKilledMove(t *testing.T) {
	for _, tc := range []struct{ name, from string }{{"ADD cut", "host"}, {"DEL cut", "pod"}} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			pod := n.pod()
			a := n.args("c1", pod, n.conf("0000:00:12.0", "default", `,"mac":"02:00:00:00:77:01"`))
			if _, err := n.add(a); err != nil {
				t.Fatal(err)
			}
			where, name := pod, "net1"
			if tc.from == "host" {
				// The pod's interface back in the host as the VF was before the ADD's move.
				c, podNS := mustCache(t, n, a), mustNS(t, pod)
				if err := n.host.Do(func(ns.NetNS) error { return n.p.returnNetdev(n.p.Log, c, podNS, true) }); err != nil {
					t.Fatal(err)
				}
				where, name = n.host, "mnvf0"
			}
			var tmp ns.NetNS
			err := n.host.Do(func(ns.NetNS) error {
				var err error
				tmp, _, err = n.p.tempNS("0000:00:12.0") // never done: the process died
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			err = where.Do(func(ns.NetNS) error {
				l, err := netlink.LinkByName(name)
				if err != nil {
					return err
				}
				netlink.LinkSetDown(l)
				return netlink.LinkSetNsFd(l, int(tmp.Fd()))
			})
			tmp.Close()
			if err != nil {
				t.Fatal(err)
			}
			if err := n.del(a); err != nil {
				t.Fatalf("DEL after the cut move: %v", err)
			}
			n.assertVFHome("mnvf0", pod)
			n.assertClean()
			if es, _ := os.ReadDir(filepath.Join(n.p.StateDir, "netns")); len(es) != 0 {
				t.Errorf("temporary netns pins left: %d", len(es))
			}
		})
	}
}

func mustCache(t *testing.T, n *node, a Args) *Cache {
	t.Helper()
	c, err := n.p.store().loadCache(a.ContainerID, a.IfName)
	if err != nil || c == nil {
		t.Fatalf("cache: %v %v", c, err)
	}
	return c
}

func mustNS(t *testing.T, p ns.NetNS) ns.NetNS {
	t.Helper()
	n, err := ns.GetNS(p.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// Record writes cut by a kill between the temp file and its rename: the ownership record's
// (the ADD died after its cache, before the record) and the cache's (the ADD died writing it).
// The runtime's DEL removes their temp files: nothing else would, in a dir every ADD writes.
func TestDelRemovesTempFilesOfCutWrites(t *testing.T) {
	n := newNode(t)
	pod := n.pod()
	a := n.args("c1", pod, n.conf("0000:00:12.0", "default", ""))
	if _, err := n.add(a); err != nil {
		t.Fatal(err)
	}
	owner := n.p.store().ownerPath("0000:00:12.0")
	if err := os.Rename(owner, filepath.Join(filepath.Dir(owner), ".0000:00:12.0.json.tmp-1234")); err != nil {
		t.Fatal(err)
	}
	b := n.args("c2", n.pod(), n.conf("0000:00:12.1", "default", ""))
	cut := filepath.Join(n.p.StateDir, "cache", ".c2-net1.json.tmp-5678")
	if err := os.WriteFile(cut, []byte(`{"containerID":"c2","ifNa`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, x := range []Args{a, b} {
		if err := n.del(x); err != nil {
			t.Fatalf("DEL %s: %v", x.ContainerID, err)
		}
	}
	n.assertVFHome("mnvf0", pod)
	n.assertClean()
}
