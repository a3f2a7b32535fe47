package benchmarks

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A scrape of multinetd's /metrics as client_golang writes it: the in-process sriov and the
// exec'd bridge, for ADD and DEL.
const agentMetrics = `# HELP multinet_cni_delegate_duration_seconds Time one delegate plugin took, by plugin type, command and whether it ran in-process.
# TYPE multinet_cni_delegate_duration_seconds histogram
multinet_cni_delegate_duration_seconds_bucket{command="ADD",inprocess="true",plugin="sriov",le="0.001"} 0
multinet_cni_delegate_duration_seconds_sum{command="ADD",inprocess="true",plugin="sriov"} 0.25
multinet_cni_delegate_duration_seconds_count{command="ADD",inprocess="true",plugin="sriov"} 10
multinet_cni_delegate_duration_seconds_sum{command="DEL",inprocess="true",plugin="sriov"} 0.5
multinet_cni_delegate_duration_seconds_count{command="DEL",inprocess="true",plugin="sriov"} 10
multinet_cni_delegate_duration_seconds_sum{command="ADD",inprocess="false",plugin="bridge"} 1.5e-01
multinet_cni_delegate_duration_seconds_count{command="ADD",inprocess="false",plugin="bridge"} 10
multinet_cni_request_duration_seconds_sum{command="ADD"} 9
multinet_cni_request_duration_seconds_count{command="ADD"} 10
multinet_cni_request_duration_seconds_bucket{command="ADD",le="+Inf"} 10
`

func TestParseDelegateMetrics(t *testing.T) {
	m, err := parseDelegateMetrics(strings.NewReader(agentMetrics))
	if err != nil {
		t.Fatal(err)
	}
	if got := m["sriov/ADD/true"]; got.Seconds != 0.25 || got.Count != 10 {
		t.Fatalf("sriov ADD: %+v", got)
	}
	if got := m["bridge/ADD/false"]; got.Seconds != 0.15 || got.Count != 10 {
		t.Fatalf("bridge ADD: %+v", got)
	}
	if got := m["request/ADD"]; got.Seconds != 9 || got.Count != 10 {
		t.Fatalf("request ADD: %+v", got)
	}
	if len(m) != 4 {
		t.Fatalf("series: %v", m)
	}
	if _, err := parseDelegateMetrics(strings.NewReader(`multinet_cni_delegate_duration_seconds_sum{plugin="x"} zz`)); err == nil {
		t.Fatal("a bad value parsed")
	}
	// Only in-process series of the command count, as deltas between two scrapes.
	later := map[string]delegateSum{"sriov/ADD/true": {Seconds: 0.35, Count: 12}, "sriov/DEL/true": {Seconds: 0.5, Count: 10},
		"bridge/ADD/false": {Seconds: 9, Count: 99}}
	d, n := inProcessDelta(m, later, "ADD")
	if n != 2 || d < 99*time.Millisecond || d > 101*time.Millisecond {
		t.Fatalf("delta %v over %d calls", d, n)
	}
	// All delegates: sriov 0.1 s + bridge 8.85 s over 91 calls.
	if d, n := delegateDelta(m, later, "ADD", false); n != 91 || d < 8949*time.Millisecond || d > 8951*time.Millisecond {
		t.Fatalf("all delegates: %v over %d calls", d, n)
	}
	later["request/ADD"] = delegateSum{Seconds: 9.5, Count: 11}
	if d := requestDelta(m, later, "ADD"); d != 500*time.Millisecond {
		t.Fatalf("request delta %v", d)
	}
}

func TestProcParsers(t *testing.T) {
	status := "Name:\tmultinetd\nVmPeak:\t 1300000 kB\nVmHWM:\t   40960 kB\nVmRSS:\t   20480 kB\nThreads:\t9\n"
	if rss, peak := statusMem(status); rss != 20480 || peak != 40960 {
		t.Fatalf("status: rss %d peak %d", rss, peak)
	}
	// A command with spaces and parentheses; utime 100, stime 50, cutime 7, cstime 3 ticks.
	stat := "4242 (multus (daemon) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 100 50 7 3 20 0 12 0 100 1000000 5000 18446744073709551615"
	if got := statCPU(stat); got != 1600*time.Millisecond {
		t.Fatalf("stat CPU %v", got)
	}
	if statCPU("garbage") != 0 {
		t.Fatal("garbage parsed")
	}
}

// host-local's lease files name their container on the first line (\r\n since 0.8, \n
// before); the bookkeeping files are no leases.
func TestLeaseOwners(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"cbr0/10.244.0.5":            "cid-a\r\neth0",
		"cbr0/10.244.0.6":            "cid-b\neth0",
		"cbr0/last_reserved_ip.0":    "10.244.0.6",
		"cbr0/lock":                  "",
		"sriov-a/10.56.0.2":          "cid-a\r\nnet1",
		"sriov-a/last_reserved_ip.0": "10.56.0.2",
	}
	for p, c := range files {
		os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := leaseOwners(dir)
	if got["cid-a"] != 2 || got["cid-b"] != 1 || len(got) != 2 {
		t.Fatalf("owners %v", got)
	}
	if n := filesNaming([]string{dir, filepath.Join(dir, "absent")}, "10.56.0"); n != 1 {
		t.Fatalf("files naming: %d", n)
	}
}

func TestSummarizeThick(t *testing.T) {
	plain := []sample{
		{add: msd(10), del: msd(5), addUsage: procUsage{CPU: msd(8)}, daemonCPU: msd(6), leaks: leaks{Leases: 1, Netdevs: 1}},
		{add: msd(12), del: msd(5), addUsage: procUsage{CPU: msd(9)}, daemonCPU: msd(7), leaks: leaks{Leases: 1}},
	}
	shares := []sample{{hasShare: true, addShare: msd(2), delegates: map[string][]time.Duration{"bridge": {msd(4)}, "sriov(in-process)": {msd(3)}}},
		{hasShare: true, addShare: msd(3), delegates: map[string][]time.Duration{"bridge": {msd(6)}}}}
	plain[0].agent = &agentSplit{add: msd(7), addDelegates: msd(6), del: msd(4), delDelegates: msd(3)}
	plain[1].agent = &agentSplit{add: msd(7), addDelegates: msd(6), del: msd(4), delDelegates: msd(3)}
	r := summarize("eth0", "multus-thick", plain, shares)
	// Own share = the harness's total - the agent's delegates: 10-6, 12-6 -> p50 4; DEL 5-3.
	if r.AgentAddP50 != 7 || r.AgentDelegatesAddP50 != 6 || r.OwnShareAddP50 != 4 || r.OwnShareDelP50 != 2 {
		t.Fatalf("agent split %+v", r)
	}
	if r.Leaks != (leaks{Leases: 2, Netdevs: 1}) || !r.Leaks.any() {
		t.Fatalf("leaks %+v", r.Leaks)
	}
	if r.PluginCPUP50 != 8 || r.DaemonCPUP50 != 6 {
		t.Fatalf("cpu %v daemon %v", r.PluginCPUP50, r.DaemonCPUP50)
	}
	if r.Delegates["bridge"] != 4 || r.Delegates["sriov(in-process)"] != 3 {
		t.Fatalf("delegates %v", r.Delegates)
	}
}

func TestTargets(t *testing.T) {
	res := func(name, stack string, add, share, p99, cpu float64) ScenarioResult {
		return ScenarioResult{Name: name, Stack: stack, Count: 10, AddP50: add, AddP99: p99, MetaShareP50: share, ShareCount: 4, PluginCPUP50: cpu}
	}
	r := &Report{Scenarios: []ScenarioResult{
		res("eth0", "multinet-thick", 10, 2.5, 12, 5), res("eth0", "multus-thick", 20, 10, 25, 9), res("eth0", "multus", 40, 30, 50, 40),
		res("eth0+1vf", "multinet-thick", 30, 4, 35, 20), res("eth0+1vf", "multus-thick", 33, 10, 40, 25),
		res("eth0+1vf-x16", "multinet-thick", 100, 50, 400, 30), res("eth0+1vf-x16", "multus-thick", 120, 60, 200, 28),
		{Name: HerdScenario, Stack: "multinet-thick", Count: 199, AddFailures: 1},
	}, DaemonMem: map[string]*DaemonMem{"multinetd": {StartKB: 30 << 10, EndKB: 35 << 10, PeakKB: 50 << 10, HerdPeakKB: 90 << 10}},
		Scale: &ScaleResult{Pods: 5000, NADs: 2000, Daemons: map[string]ScaleMem{"multinetd": {BeforeKB: 30 << 10, AfterKB: 38 << 10}}}}
	got := map[string]Target{}
	for _, tg := range Targets(r) {
		got[tg.Name] = tg
	}
	want := map[string]bool{
		"own share (total - delegates) on eth0 <= 3 ms":                      true,
		"own share (total - delegates) on eth0+1vf <= 3 ms":                  false,
		"eth0 ADD <= 0.60x multus-thick's":                                   true, // 0.5
		"eth0 ADD <= 0.40x multus's":                                         true, // 0.25
		"eth0+1vf ADD <= 0.85x multus-thick's":                               false,
		"eth0+1vf-x16 ADD <= 0.85x multus-thick's":                           true,
		"eth0+1vf-x16 ADD p99 <= 3x its p50":                                 false, // 4x
		"eth0+1vf-x16 CPU/ADD below multus-thick's":                          false,
		"multinetd RSS steady <= 40 MiB":                                     true,
		"multinetd RSS peak in a herd of 200 pods <= 80 MiB":                 false,
		"herd of 200 pods: no failure":                                       false,
		"multinetd RSS growth with 5000 pods elsewhere + 2000 NADs < 20 MiB": true,
	}
	for name, met := range want {
		tg, ok := got[name]
		if !ok {
			t.Errorf("no target %q (have %v)", name, got)
			continue
		}
		if tg.Met != met {
			t.Errorf("%s: met=%v, want %v (%s)", name, tg.Met, met, tg.Detail)
		}
	}
	// Not measured (no multus thin on eth0+1vf, no eth0+4): not judged.
	if _, ok := got["eth0+1vf ADD <= 0.70x multus's"]; ok {
		t.Error("judged a target without its numbers")
	}
	if len(got) != len(want) {
		t.Errorf("%d targets, want %d", len(got), len(want))
	}
	r.Targets = Targets(r)
	r.HarnessMaxRSSKB = 40 << 10 // every plugin RSS (0 here) is at most the harness's: not known
	var out bytes.Buffer
	r.Table(&out)
	if !strings.Contains(out.String(), "MISS eth0+1vf-x16 ADD p99 <= 3x its p50") || !strings.Contains(out.String(), "peak in herd200: 90.0") ||
		!strings.Contains(out.String(), " <=40 ") {
		t.Fatalf("table:\n%s", out.String())
	}
}

func TestParseAPIMetrics(t *testing.T) {
	text := `# TYPE apiserver_request_duration_seconds histogram
apiserver_request_duration_seconds_bucket{component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="status",verb="PATCH",version="v1",le="0.005"} 3
apiserver_request_duration_seconds_sum{component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="status",verb="PATCH",version="v1"} 0.03
apiserver_request_duration_seconds_count{component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="status",verb="PATCH",version="v1"} 4
apiserver_request_duration_seconds_sum{component="apiserver",dry_run="All",group="",resource="pods",scope="resource",subresource="status",verb="PATCH",version="v1"} 0.02
apiserver_request_duration_seconds_count{component="apiserver",dry_run="All",group="",resource="pods",scope="resource",subresource="status",verb="PATCH",version="v1"} 1
apiserver_request_duration_seconds_sum{component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="GET",version="v1"} 0.01
apiserver_request_duration_seconds_count{component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="GET",version="v1"} 5
apiserver_request_duration_seconds_sum{component="apiserver",dry_run="",group="",resource="pods",scope="cluster",subresource="",verb="WATCH",version="v1"} 900
apiserver_request_duration_seconds_count{component="apiserver",dry_run="",group="",resource="pods",scope="cluster",subresource="",verb="WATCH",version="v1"} 3
apiserver_request_duration_seconds_sum{component="apiserver",dry_run="",group="",resource="namespaces",scope="resource",subresource="",verb="GET",version="v1"} 7
apiserver_request_duration_seconds_count{component="apiserver",dry_run="",group="",resource="namespaces",scope="resource",subresource="",verb="GET",version="v1"} 7
`
	m, err := parseAPIMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	// PATCH: both dry-run series added, 0.05 s over 5 calls.
	if got := m["PATCH pods/status"]; got.Count != 5 || got.MeanMS != 10 {
		t.Fatalf("PATCH: %+v", got)
	}
	if got := m["GET pods"]; got.Count != 5 || got.MeanMS != 2 {
		t.Fatalf("GET: %+v", got)
	}
	if len(m) != 2 {
		t.Fatalf("watches and other resources kept: %v", m)
	}
}
