package benchmarks

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
)

// leaks is what one pod's DEL left behind, as a user would find it: an IP lease still held for
// the container (host-local's files), interfaces still in the pod's netns, VF netdevs not
// back on the host, and state files naming the container (delegate caches, sriov records). A
// runtime deletes the netns after DEL, so left interfaces vanish with it, but their leases and
// state stay forever.
type leaks struct {
	Leases  int `json:"leases"`
	Netdevs int `json:"netdevs"`
	VFs     int `json:"vfs"`
	Files   int `json:"files"`
}

func (l leaks) any() bool { return l.Leases+l.Netdevs+l.VFs+l.Files > 0 }

func (l *leaks) add(o leaks) {
	l.Leases += o.Leases
	l.Netdevs += o.Netdevs
	l.VFs += o.VFs
	l.Files += o.Files
}

// leaseOwners reads host-local's data dir (<dir>/<network>/<ip>, each file "containerID\r\n
// ifname") into how many leases each container holds.
func leaseOwners(dir string) map[string]int {
	out := map[string]int{}
	nets, _ := os.ReadDir(dir)
	for _, n := range nets {
		if !n.IsDir() {
			continue
		}
		files, _ := os.ReadDir(filepath.Join(dir, n.Name()))
		for _, f := range files {
			if f.IsDir() || strings.HasPrefix(f.Name(), "last_reserved_ip") || f.Name() == "lock" {
				continue
			}
			b, err := os.ReadFile(filepath.Join(dir, n.Name(), f.Name()))
			if err != nil {
				continue
			}
			if id := leaseContainer(b); id != "" {
				out[id]++
			}
		}
	}
	return out
}

// leaseContainer is the container ID of a host-local lease file's content.
func leaseContainer(b []byte) string {
	first, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(first)
}

// filesNaming counts files under dirs whose path names the container.
func filesNaming(dirs []string, containerID string) int {
	n := 0
	for _, d := range dirs {
		_ = filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
			if err == nil && !e.IsDir() && strings.Contains(p, containerID) {
				n++
			}
			return nil
		})
	}
	return n
}

// podLeaks checks one pod after its DEL.
func (b *Bench) podLeaks(p *pod, st *Stack, leases map[string]int) leaks {
	l := leaks{Leases: leases[p.rt.ContainerID], Files: filesNaming(st.stateDirs, p.rt.ContainerID)}
	_ = p.ns.Do(func(ns.NetNS) error {
		links, err := netlinksafe.LinkList()
		if err != nil {
			return err
		}
		for _, k := range links {
			if k.Attrs().Name != "lo" {
				l.Netdevs++
			}
		}
		return nil
	})
	for _, addr := range p.vfs {
		if _, err := netlinksafe.LinkByName(b.node.VFNetdevs[addr]); err != nil {
			l.VFs++
		}
	}
	return l
}
