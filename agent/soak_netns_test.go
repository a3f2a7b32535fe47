package agent_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/testutils"
)

// soakShape is one pod shape of the bench (benchmarks.Scenarios), in thick mode.
type soakShape struct {
	name string
	vfs  int  // VFs, each through the sriov NAD (in-process sriov)
	macs bool // and the two macvlan networks
	pods int  // attaching at once
}

var soakShapes = []soakShape{
	{"eth0", 0, false, 1},
	{"eth0+1vf", 1, false, 1},
	{"eth0+4", 2, true, 1},
	{"eth0+1vf-x4", 1, false, 4},
}

// vmRSS reads a process's resident set size in KiB from /proc/<pid>/status.
func vmRSS(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// TestSoakThick runs ADD/DEL cycles (MULTINET_SOAK_CYCLES, default 50; `make soak` runs 1000)
// through the shim and the agent (a real multinetd process, sriov in-process), over a random
// mix of the bench's pod shapes on a simulated node with 8 VFs, as the runtime does. At the
// end nothing may have leaked: the same host links with the same MAC, MTU and state (every VF
// back under its name), no lease, delegate cache, network-status, sriov record or runtime
// cache file, doctor finding nothing; and the agent's RSS after the run within 10 % of its RSS
// after the first 100 cycles (checked from 200 cycles on: shorter runs only report it).
func TestSoakThick(t *testing.T) {
	cycles := envInt(t, "MULTINET_SOAK_CYCLES", 50)
	v := newVFNode(t, 8)
	v.nad("default", "macvlan-b", `{"cniVersion": "0.3.0", "name": "macvlan-b", "type": "macvlan", "master": "eth0", "mode": "bridge",
	  "ipam": {"type": "host-local", "dataDir": "`+v.ipamDir+`", "subnet": "10.11.0.0/24"}}`, nil)
	v.startVFAgent()
	conf := v.conf("multinet-shim", nil)
	// The baseline after one pod: the cluster network's bridge stays by design.
	warm := v.vfPod("warm", 0, conf)
	if _, err := warm.add(); err != nil {
		t.Fatal(err)
	}
	if err := warm.del(); err != nil {
		t.Fatal(err)
	}
	base := v.hostLinks()
	if left := v.leftovers(base, nil, nil); left != "" {
		t.Fatalf("after the warm-up pod: %s", left)
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("MULTINET_SOAK_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	rng := rand.New(rand.NewPCG(seed, 13))
	rssAt := min(100, cycles/2)
	rss0, rssPeak := 0, 0
	var mu sync.Mutex
	var adds, dels []time.Duration
	mix := map[string]int{}
	start := time.Now()
	done, seq := 0, 0
	for done < cycles {
		sh := soakShapes[rng.IntN(len(soakShapes))]
		k := min(sh.pods, cycles-done)
		mix[sh.name] += k
		pods := make([]*pod, k)
		want := make([]int, k)
		free := append([]string(nil), v.vfs...)
		for j := range pods {
			seq++
			var sel []string
			for i := 0; i < sh.vfs; i++ {
				sel = append(sel, fmt.Sprintf(`{"name": "sriov-net", "deviceID": %q}`, free[0]))
				free = free[1:]
			}
			if sh.macs {
				sel = append(sel, `{"name": "macvlan-conf"}`, `{"name": "macvlan-b"}`)
			}
			networks := ""
			if len(sel) > 0 {
				networks = "[" + strings.Join(sel, ",") + "]"
			}
			pods[j] = v.pod(fmt.Sprintf("s%d", seq), networks, conf)
			pods[j].cni = libcni.NewCNIConfigWithCacheDir([]string{binDir, refPlugins, sriovDir}, v.rtCache, nil)
			want[j] = 1 + len(sel)
		}
		var wg sync.WaitGroup
		for j, p := range pods {
			wg.Add(1)
			go func() {
				defer wg.Done()
				t0 := time.Now()
				_, err := p.add()
				d := time.Since(t0)
				if err != nil {
					t.Errorf("%s ADD (%s): %v", p.rt.ContainerID, sh.name, err)
				} else if got := len(p.links()); got != want[j] {
					t.Errorf("%s (%s): %d interfaces, want %d", p.rt.ContainerID, sh.name, got, want[j])
				}
				t1 := time.Now()
				if err := p.del(); err != nil {
					t.Errorf("%s DEL (%s): %v", p.rt.ContainerID, sh.name, err)
				}
				mu.Lock()
				adds, dels = append(adds, d), append(dels, time.Since(t1))
				mu.Unlock()
			}()
		}
		wg.Wait()
		for _, p := range pods {
			p.ns.Close()
			testutils.UnmountNS(p.ns)
		}
		before := done
		done += k
		rss := vmRSS(t, v.agent.Process.Pid)
		rssPeak = max(rssPeak, rss)
		if before < rssAt && done >= rssAt {
			rss0 = rss
		}
		if t.Failed() {
			t.Fatalf("stopped after %d cycles (seed %d)\n%s", done, seed, v.log())
		}
	}
	elapsed := time.Since(start)
	rss1 := vmRSS(t, v.agent.Process.Pid)
	now := v.hostLinks()
	leakedLinks := len(diff(now, base)) + len(diff(base, now))
	files := v.stateFiles()
	if left := v.leftovers(base, nil, nil); left != "" {
		t.Errorf("after %d cycles: %s", cycles, left)
	}
	growth := 100 * float64(rss1-rss0) / float64(rss0)
	t.Logf("soak thick: %d cycles in %s (seed %d, mix %v): ADD p50 %s p99 %s, DEL p50 %s p99 %s; leaked: %d netdevs/settings, %d files (leases, caches, records), doctor clean: %v; agent RSS %d KiB after %d cycles, %d KiB after %d (%+.1f %%), peak %d KiB",
		cycles, elapsed.Round(time.Millisecond), seed, mix, pct(adds, 50), pct(adds, 99), pct(dels, 50), pct(dels, 99),
		leakedLinks, len(files), !t.Failed(), rss0, rssAt, rss1, cycles, growth, rssPeak)
	if cycles >= 200 && growth > 10 {
		t.Errorf("agent RSS grew %.1f %% from %d KiB after %d cycles to %d KiB after %d: want within 10 %%", growth, rss0, rssAt, rss1, cycles)
	}
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, len(s)*p/100)].Round(time.Millisecond)
}
