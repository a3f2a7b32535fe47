package meta_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
)

// soakScenario is one pod shape of the bench (benchmarks.Scenarios) in standalone mode.
type soakScenario struct {
	name     string
	networks string
	vfs      int
	pods     int // attaching at once
}

var soakScenarios = []soakScenario{
	{"eth0", "", 0, 1},
	{"eth0+1vf", "sriov-a", 1, 1},
	{"eth0+4", "sriov-a,sriov-b,macvlan-a,macvlan-b", 2, 1},
	{"eth0+1vf-x4", "sriov-a", 1, 4},
}

// hostState is what a leak would change on the node: its links (name, MAC, MTU, up) and every
// state file multinet, its delegates and the runtime keep.
func (v *vfNode) hostState() (links []string, files []string) {
	_ = v.host.Do(func(ns.NetNS) error {
		ls, _ := netlink.LinkList()
		for _, l := range ls {
			a := l.Attrs()
			links = append(links, fmt.Sprintf("%s %s mtu %d up %v", a.Name, a.HardwareAddr, a.MTU, a.Flags&1 != 0))
		}
		return nil
	})
	for _, d := range []string{v.ipamDir, v.cacheDir, v.state, v.rtCache} {
		filepath.Walk(d, func(p string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() && !strings.HasSuffix(p, ".lock") && filepath.Base(p) != "lock" &&
				!strings.HasPrefix(filepath.Base(p), "last_reserved_ip") {
				files = append(files, p)
			}
			return nil
		})
	}
	sort.Strings(links)
	sort.Strings(files)
	return links, files
}

// TestSoak runs thin ADD/DEL cycles (MULTINET_SOAK_CYCLES, default 50; `make soak` runs 1000)
// over a random mix of the bench's pod shapes on a simulated node with 8 VFs, as the runtime
// does, and checks at the end that nothing leaked: the same host links with the same MAC, MTU
// and state (VF settings included), no lease, delegate cache, sriov record or runtime cache
// file, and doctor finding nothing stale. Every pod is checked for its interfaces.
func TestSoak(t *testing.T) {
	cycles := 50
	if s := os.Getenv("MULTINET_SOAK_CYCLES"); s != "" {
		var err error
		if cycles, err = strconv.Atoi(s); err != nil {
			t.Fatalf("MULTINET_SOAK_CYCLES=%q: %v", s, err)
		}
	}
	v := faultNode(t, 8)
	// The baseline after one pod: the cluster network's bridge stays by design.
	warm := v.vfPod("warm", "")
	if _, err := warm.add(); err != nil {
		t.Fatal(err)
	}
	if err := warm.del(); err != nil {
		t.Fatal(err)
	}
	links0, files0 := v.hostState()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("MULTINET_SOAK_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	rng := rand.New(rand.NewPCG(seed, 17))
	var mu sync.Mutex
	alloc := map[string][]string{}
	free := append([]string(nil), v.vfs...)
	var adds, dels []time.Duration
	perScenario := map[string]int{}
	start := time.Now()
	done, seq := 0, 0
	for done < cycles {
		sc := soakScenarios[rng.IntN(len(soakScenarios))]
		k := min(sc.pods, cycles-done)
		perScenario[sc.name] += k
		pods := make([]*pod, k)
		mu.Lock()
		for j := range pods {
			seq++
			name := fmt.Sprintf("s%d", seq)
			alloc["uid-"+name], free = free[:sc.vfs], free[sc.vfs:]
			pods[j] = v.vfPod(name, sc.networks)
		}
		v.checkpoint(alloc)
		mu.Unlock()
		var wg sync.WaitGroup
		for _, p := range pods {
			wg.Add(1)
			go func() {
				defer wg.Done()
				t0 := time.Now()
				_, err := p.add()
				d := time.Since(t0)
				if err != nil {
					t.Errorf("%s ADD (%s): %v", p.rt.ContainerID, sc.name, err)
				} else if got := len(p.links()); got != 1+len(strings.FieldsFunc(sc.networks, func(r rune) bool { return r == ',' })) {
					t.Errorf("%s (%s): %d interfaces", p.rt.ContainerID, sc.name, got)
				}
				t1 := time.Now()
				if err := p.del(); err != nil {
					t.Errorf("%s DEL (%s): %v", p.rt.ContainerID, sc.name, err)
				}
				mu.Lock()
				adds, dels = append(adds, d), append(dels, time.Since(t1))
				mu.Unlock()
			}()
		}
		wg.Wait()
		mu.Lock()
		for _, p := range pods {
			uid := "uid-" + strings.TrimPrefix(p.rt.ContainerID, "ctr-")
			free = append(free, alloc[uid]...)
			delete(alloc, uid)
			p.ns.Close()
			testutils.UnmountNS(p.ns)
		}
		sort.Strings(free)
		mu.Unlock()
		done += k
		if t.Failed() {
			t.Fatalf("stopped after %d cycles (seed %d)", done, seed)
		}
	}
	elapsed := time.Since(start)
	links1, files1 := v.hostState()
	leakedLinks := diff(links1, links0)
	leakedFiles := diff(files1, files0)
	if len(leakedLinks) > 0 || len(diff(links0, links1)) > 0 {
		t.Errorf("host links changed: now %v, gone %v", leakedLinks, diff(links0, links1))
	}
	if len(leakedFiles) > 0 {
		t.Errorf("state files left: %v", leakedFiles)
	}
	v.assertNothingLeft()
	t.Logf("soak: %d cycles in %s (seed %d, mix %v): ADD p50 %s p99 %s, DEL p50 %s p99 %s; leaked: %d netdevs/settings, %d files (leases, caches, records), doctor clean: %v",
		cycles, elapsed.Round(time.Millisecond), seed, perScenario, pct(adds, 50), pct(adds, 99), pct(dels, 50), pct(dels, 99),
		len(leakedLinks), len(leakedFiles), !t.Failed())
}

func diff(a, b []string) []string {
	in := map[string]bool{}
	for _, s := range b {
		in[s] = true
	}
	var out []string
	for _, s := range a {
		if !in[s] {
			out = append(out, s)
		}
	}
	return out
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, len(s)*p/100)].Round(time.Millisecond)
}
