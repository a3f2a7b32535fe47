package benchmarks

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"
)

// Report is benchmarks/out/latest.json.
type Report struct {
	Machine   MachineInfo      `json:"machine"`
	Scenarios []ScenarioResult `json:"scenarios"`
	// Daemons: peak RSS (rusage) of the long-running processes of the run (etcd,
	// kube-apiserver, and the thick stacks' multinetd and multus-daemon).
	Daemons map[string]int64 `json:"daemon_peak_rss_kb,omitempty"`
	// DaemonMem: the thick stacks' daemons' RSS over the run, by daemon.
	DaemonMem map[string]*DaemonMem `json:"daemon_mem,omitempty"`
	// Scale: the thick daemons' RSS growth with many pods on other nodes and many NADs.
	Scale *ScaleResult `json:"scale,omitempty"`
	// APIRequests: the API server's own mean time per pod request of the run (all stacks and
	// the harness's own creates, GETs and deletes), e.g. "PATCH pods/status".
	APIRequests map[string]APIRequest `json:"api_requests,omitempty"`
	// Targets: issue 13's targets, met or not, as far as this run measured them.
	Targets []Target `json:"targets,omitempty"`
	// HarnessMaxRSSKB is the harness's own peak RSS. The kernel starts an exec'd child's
	// ru_maxrss at its parent's (Go forks with CLONE_VM, and exec records the old mm's peak),
	// so a plugin RSS at or below this says only "no more than the harness".
	HarnessMaxRSSKB int64 `json:"harness_max_rss_kb,omitempty"`
	// WrapOverheadMS is what the delegate timing wrapper adds per delegate exec (subtracted).
	WrapOverheadMS float64 `json:"wrap_overhead_ms"`
	// Paired compares the two stacks pod by pod: sample i of each ran back to back.
	Paired []Paired `json:"paired,omitempty"`
	// PF is the real PF of a --pf run (netdev, PCI address, driver); "" for the simulated node.
	PF string `json:"pf,omitempty"`
}

// DaemonMem is one daemon's resident set: after setup (caches synced), after the last regular
// scenario, its peak (VmHWM) until then, and its peak during the herd of 200 pods.
type DaemonMem struct {
	StartKB int64 `json:"start_kb"`
	EndKB   int64 `json:"end_kb"`
	PeakKB  int64 `json:"peak_kb"`
	// EndAnonKB: of EndKB, anonymous memory (heap, stacks); the rest is the binary's pages.
	EndAnonKB  int64 `json:"end_anon_kb"`
	HerdPeakKB int64 `json:"herd_peak_kb,omitempty"`
}

// Paired is theirs/ours (multus/multinet) per pair of pods that ran back to back (same cycle),
// which cancels the machine's slow drifts that the p50 of each side still carries.
type Paired struct {
	Name          string  `json:"name"`
	Ours          string  `json:"ours"`
	Theirs        string  `json:"theirs"`
	Pairs         int     `json:"pairs"`
	AddRatioP50   float64 `json:"add_ratio_p50"`
	DelRatioP50   float64 `json:"del_ratio_p50"`
	AddMultinetWn int     `json:"add_multinet_faster"`
	DelMultinetWn int     `json:"del_multinet_faster"`
}

// pair compares samples with the same index; a pair where either side failed is skipped.
func pair(name, ours, theirs string, multinet, multus []sample) Paired {
	p := Paired{Name: name, Ours: ours, Theirs: theirs}
	var add, del []float64
	for i := 0; i < len(multinet) && i < len(multus); i++ {
		a, b := multinet[i], multus[i]
		if a.addErr != nil || b.addErr != nil || a.delErr != nil || b.delErr != nil || a.add <= 0 || a.del <= 0 {
			continue
		}
		p.Pairs++
		add = append(add, float64(b.add)/float64(a.add))
		del = append(del, float64(b.del)/float64(a.del))
		if a.add < b.add {
			p.AddMultinetWn++
		}
		if a.del < b.del {
			p.DelMultinetWn++
		}
	}
	p.AddRatioP50, p.DelRatioP50 = median(add), median(del)
	return p
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return math.Round(m*100) / 100
}

// MachineInfo says where the numbers come from.
type MachineInfo struct {
	Cores    int               `json:"cores"`
	CPU      string            `json:"cpu"`
	Kernel   string            `json:"kernel"`
	Go       string            `json:"go"`
	Date     string            `json:"date"`
	Versions map[string]string `json:"versions"`
}

// ScenarioResult is one scenario on one stack ("multinet", "multus", or "floor": the bare
// netlink operations in one process).
type ScenarioResult struct {
	Name            string  `json:"name"`
	Stack           string  `json:"stack"`
	Count           int     `json:"count"`
	AddP50          float64 `json:"add_p50_ms"`
	AddP90          float64 `json:"add_p90_ms"`
	AddP99          float64 `json:"add_p99_ms"`
	AddMax          float64 `json:"add_max_ms"`
	DelCount        int     `json:"del_count"`
	DelP50          float64 `json:"del_p50_ms"`
	DelP90          float64 `json:"del_p90_ms"`
	DelP99          float64 `json:"del_p99_ms"`
	DelMax          float64 `json:"del_max_ms"`
	MetaShareP50    float64 `json:"meta_share_p50_ms"`
	MetaShareDelP50 float64 `json:"meta_share_del_p50_ms"`
	ShareCount      int     `json:"share_count"`
	// The meta-plugin process (with the delegates it waited for): peak RSS and CPU time.
	PluginMaxRSSKB int64   `json:"plugin_max_rss_kb,omitempty"`
	PluginCPUP50   float64 `json:"plugin_add_cpu_p50_ms,omitempty"`
	// DaemonCPUP50: thick stacks, the daemon's part of PluginCPUP50 (delegates it ran included).
	DaemonCPUP50 float64 `json:"daemon_add_cpu_p50_ms,omitempty"`
	// Leaks: what the DELs left, summed over the pods (see leaks).
	Leaks leaks `json:"leaks"`
	// Agent* (multinet-thick, plain pass, from multinetd's metrics): the agent's time serving
	// ADD, its delegates' part of it, and the own share total - delegates (shim, socket and
	// the agent's own work).
	AgentAddP50          float64 `json:"agent_add_p50_ms,omitempty"`
	AgentDelegatesAddP50 float64 `json:"agent_delegates_add_p50_ms,omitempty"`
	OwnShareAddP50       float64 `json:"own_share_add_p50_ms,omitempty"`
	OwnShareDelP50       float64 `json:"own_share_del_p50_ms,omitempty"`
	// Delegates: p50 of one ADD call by delegate type, from the wrapped pass (ms).
	Delegates   map[string]float64 `json:"delegate_add_p50_ms,omitempty"`
	AddFailures int                `json:"add_failures"`
	DelFailures int                `json:"del_failures"`
	WrongAttach int                `json:"wrong_attachments"`
	FirstError  string             `json:"first_error,omitempty"`
}

func summarize(name, stack string, plain, shares []sample) ScenarioResult {
	r := ScenarioResult{Name: name, Stack: stack}
	var add, del, cpu, dcpu, sAdd, sDel []time.Duration
	var agAdd, agDeleg, ownAdd, ownDel []time.Duration
	for _, s := range plain {
		r.Leaks.add(s.leaks)
		if s.agent != nil && s.addErr == nil {
			agAdd, agDeleg = append(agAdd, s.agent.add), append(agDeleg, s.agent.addDelegates)
			ownAdd = append(ownAdd, s.add-s.agent.addDelegates)
			if s.delErr == nil {
				ownDel = append(ownDel, s.del-s.agent.delDelegates)
			}
		}
		switch {
		case s.addErr != nil:
			r.AddFailures++
			r.note(s.addErr)
			continue
		case s.vErr != nil:
			r.WrongAttach++
			r.note(s.vErr)
		}
		add = append(add, s.add)
		if s.addUsage.CPU > 0 {
			cpu = append(cpu, s.addUsage.CPU)
		}
		if s.daemonCPU > 0 {
			dcpu = append(dcpu, s.daemonCPU)
		}
		r.PluginMaxRSSKB = max(r.PluginMaxRSSKB, s.addUsage.MaxRSSKB, s.delUsage.MaxRSSKB)
		if s.delErr != nil {
			r.DelFailures++
			r.note(s.delErr)
			continue
		}
		del = append(del, s.del)
	}
	per := map[string][]time.Duration{}
	for _, s := range shares {
		for k, v := range s.delegates {
			per[k] = append(per[k], v...)
		}
		if s.hasShare && s.addErr == nil {
			sAdd = append(sAdd, s.addShare)
			if s.delErr == nil {
				sDel = append(sDel, s.delShare)
			}
		}
	}
	a, d := Summarize(add), Summarize(del)
	r.Count, r.AddP50, r.AddP90, r.AddP99, r.AddMax = a.Count, a.P50, a.P90, a.P99, a.Max
	r.DelCount, r.DelP50, r.DelP90, r.DelP99, r.DelMax = d.Count, d.P50, d.P90, d.P99, d.Max
	r.MetaShareP50, r.MetaShareDelP50, r.ShareCount = Summarize(sAdd).P50, Summarize(sDel).P50, len(sAdd)
	r.PluginCPUP50, r.DaemonCPUP50 = Summarize(cpu).P50, Summarize(dcpu).P50
	r.AgentAddP50, r.AgentDelegatesAddP50 = Summarize(agAdd).P50, Summarize(agDeleg).P50
	r.OwnShareAddP50, r.OwnShareDelP50 = Summarize(ownAdd).P50, Summarize(ownDel).P50
	if len(per) > 0 {
		r.Delegates = map[string]float64{}
		for k, v := range per {
			r.Delegates[k] = Summarize(v).P50
		}
	}
	return r
}

func (r *ScenarioResult) note(err error) {
	if r.FirstError == "" {
		r.FirstError = err.Error()
		if len(r.FirstError) > 600 {
			r.FirstError = r.FirstError[:600] + "..."
		}
	}
}

// Machine describes this machine and the versions compared.
func Machine(o Options) MachineInfo {
	m := MachineInfo{Cores: runtime.NumCPU(), Go: runtime.Version(), Date: time.Now().UTC().Format(time.RFC3339),
		Versions: map[string]string{"multus": o.MultusVersion, "multinet": o.MultinetVersion,
			"kube-apiserver": o.K8sVersion, "etcd": o.EtcdVersion}}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				m.CPU = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", "containernetworking-plugins").Output(); err == nil {
		m.Versions["containernetworking-plugins"] = string(out)
	}
	return m
}

// WriteJSON writes the report.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Table prints the stacks side by side per scenario, then multus/multinet ratios.
func (r *Report) Table(w io.Writer) {
	m := r.Machine
	if r.PF != "" {
		fmt.Fprintf(w, "%d cores (%s), kernel %s, %s; multinet %s; PF %s; times in ms\n",
			m.Cores, m.CPU, m.Kernel, m.Go, m.Versions["multinet"], r.PF)
	} else {
		fmt.Fprintf(w, "%d cores (%s), kernel %s, %s; multinet %s, Multus %s, kube-apiserver %s; times in ms\n",
			m.Cores, m.CPU, m.Kernel, m.Go, m.Versions["multinet"], m.Versions["multus"], m.Versions["kube-apiserver"])
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tstack\tn\tADD p50\tp90\tp99\tmax\tDEL p50\tp90\tp99\tmax\tmeta ADD p50\tmeta DEL p50\tCPU/ADD\tplugin RSS MB\tfail add/del\tleaks l/n/v/f\t")
	for _, s := range r.Scenarios {
		share, shareDel, cpu, rss, lk := "-", "-", "-", "-", "-"
		if s.Stack != "floor" {
			if s.ShareCount > 0 {
				share, shareDel = fmt.Sprintf("%.2f", s.MetaShareP50), fmt.Sprintf("%.2f", s.MetaShareDelP50)
			}
			cpu, rss = fmt.Sprintf("%.1f", s.PluginCPUP50), fmt.Sprintf("%.1f", float64(s.PluginMaxRSSKB)/1024)
			if r.HarnessMaxRSSKB > 0 && s.PluginMaxRSSKB <= r.HarnessMaxRSSKB {
				rss = fmt.Sprintf("<=%.0f", float64(r.HarnessMaxRSSKB)/1024)
			}
			if r.PF == "" {
				lk = fmt.Sprintf("%d/%d/%d/%d", s.Leaks.Leases, s.Leaks.Netdevs, s.Leaks.VFs, s.Leaks.Files)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%s\t%s\t%s\t%s\t%d/%d\t%s\t\n", s.Name, s.Stack, s.Count,
			s.AddP50, s.AddP90, s.AddP99, s.AddMax, s.DelP50, s.DelP90, s.DelP99, s.DelMax, share, shareDel, cpu, rss, s.AddFailures, s.DelFailures, lk)
	}
	tw.Flush()
	fmt.Fprintln(w)
	if r.PF != "" {
		fmt.Fprintf(w, "sriov = our sriov plugin exec'd through libcni (vlan %d through the PF; a netdev VF moved into the pod as net1); floor = the same netlink operations in one process; CPU/ADD and RSS of the plugin process\n", pfBenchVLAN)
		r.errors(w)
		return
	}
	fmt.Fprintf(w, "meta = the meta-plugin's own share (delegates' time and %.2f ms per wrapped exec subtracted; thick: shim + agent); CPU/ADD = CPU ms of the plugin process tree (thick: shim + daemon with its delegates); plugin RSS = peak of the meta-plugin or shim process (\"<=N\": the kernel counts the forking harness's N MB in it)\n", r.WrapOverheadMS)
	fmt.Fprintln(w, "leaks l/n/v/f = after the DELs: IP leases still held / netdevs left in the pod netns / VF netdevs not back on the host / state files naming the container, summed over the pods")
	fmt.Fprintln(w, "theirs / ours (p50; >1 means ours is faster):")
	for _, c := range [][2]string{{"multinet", "multus"}, {"multinet-thick", "multus-thick"}, {"multinet-thick", "multus"}} {
		for _, s := range r.Scenarios {
			o := r.find(s.Name, c[1])
			if s.Stack != c[0] || o == nil {
				continue
			}
			fmt.Fprintf(w, "  %-14s %-30s ADD %s  DEL %s  own ADD share %s  CPU/ADD %s\n", s.Name, c[1]+" / "+c[0],
				ratio(o.AddP50, s.AddP50, o.Count), ratio(o.DelP50, s.DelP50, o.DelCount), ratio(o.MetaShareP50, s.MetaShareP50, o.ShareCount), ratio(o.PluginCPUP50, s.PluginCPUP50, o.Count))
		}
	}
	if len(r.Paired) > 0 {
		fmt.Fprintln(w, "paired (pods i of both stacks ran back to back): median of theirs/ours, and how often ours was faster:")
		for _, p := range r.Paired {
			fmt.Fprintf(w, "  %-14s %-30s ADD %.2fx (%d/%d)  DEL %.2fx (%d/%d)\n", p.Name, p.Theirs+" / "+p.Ours, p.AddRatioP50, p.AddMultinetWn, p.Pairs, p.DelRatioP50, p.DelMultinetWn, p.Pairs)
		}
	}
	for _, s := range r.Scenarios {
		if s.AgentAddP50 > 0 {
			fmt.Fprintf(w, "  %-14s %s, plain pass, multinetd's metrics (p50s): ADD %.2f = shim + socket %.2f + agent's own %.2f + delegates %.2f; own share ADD %.2f, DEL %.2f\n",
				s.Name, s.Stack, s.AddP50, s.AddP50-s.AgentAddP50, s.AgentAddP50-s.AgentDelegatesAddP50, s.AgentDelegatesAddP50, s.OwnShareAddP50, s.OwnShareDelP50)
		}
	}
	r.delegates(w)
	r.errors(w)
	if len(r.DaemonMem) > 0 {
		fmt.Fprintln(w, "thick daemons' RSS (MiB): after setup / after the scenarios (of which anonymous) / peak")
		for _, k := range sortedKeys(r.DaemonMem) {
			m := r.DaemonMem[k]
			if m.EndKB > 0 {
				fmt.Fprintf(w, "  %-22s %6.1f / %6.1f (%.1f) / %6.1f", k, mib(m.StartKB), mib(m.EndKB), mib(m.EndAnonKB), mib(m.PeakKB))
			} else { // only the herd ran
				fmt.Fprintf(w, "  %-22s %6.1f /      - /      -", k, mib(m.StartKB))
			}
			if m.HerdPeakKB > 0 {
				fmt.Fprintf(w, "   peak in %s: %.1f", HerdScenario, mib(m.HerdPeakKB))
			}
			fmt.Fprintln(w)
		}
	}
	if r.Scale != nil {
		r.Scale.table(w)
	}
	if len(r.APIRequests) > 0 {
		fmt.Fprint(w, "kube-apiserver's own mean time per pod request over the run (all stacks and the harness):")
		for _, k := range sortedKeys(r.APIRequests) {
			fmt.Fprintf(w, "  %s %.2f ms (%d)", k, r.APIRequests[k].MeanMS, r.APIRequests[k].Count)
		}
		fmt.Fprintln(w)
	}
	if len(r.Daemons) > 0 {
		fmt.Fprintf(w, "daemon peak RSS (rusage; etcd and kube-apiserver shared by all stacks): ")
		for _, k := range sortedKeys(r.Daemons) {
			fmt.Fprintf(w, "%s %.0f MB  ", k, float64(r.Daemons[k])/1024)
		}
		fmt.Fprintln(w)
	}
	if len(r.Targets) > 0 {
		fmt.Fprintln(w, "issue 13 targets (multinet-thick):")
		for _, t := range r.Targets {
			fmt.Fprintf(w, "  %-4s %-62s %s\n", t.verdict(), t.Name, t.Detail)
		}
	}
}

func mib(kb int64) float64 { return float64(kb) / 1024 }

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func (r *Report) find(name, stack string) *ScenarioResult {
	for i := range r.Scenarios {
		if r.Scenarios[i].Name == name && r.Scenarios[i].Stack == stack {
			return &r.Scenarios[i]
		}
	}
	return nil
}

// delegates prints the wrapped pass's per-call ADD time by delegate type.
func (r *Report) delegates(w io.Writer) {
	types := map[string]bool{}
	for _, s := range r.Scenarios {
		for k := range s.Delegates {
			types[k] = true
		}
	}
	if len(types) == 0 {
		return
	}
	cols := sortedKeys(types)
	fmt.Fprintln(w, "delegates: p50 of one ADD call (ms), wrapped pass (bridge includes its host-local IPAM exec):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "scenario\tstack\t%s\t\n", strings.Join(cols, "\t"))
	for _, s := range r.Scenarios {
		if len(s.Delegates) == 0 {
			continue
		}
		row := []string{s.Name, s.Stack}
		for _, c := range cols {
			if v, ok := s.Delegates[c]; ok {
				row = append(row, fmt.Sprintf("%.2f", v))
			} else {
				row = append(row, "-")
			}
		}
		fmt.Fprintf(tw, "%s\t\n", strings.Join(row, "\t"))
	}
	tw.Flush()
}

func (r *Report) errors(w io.Writer) {
	for _, s := range r.Scenarios {
		if s.FirstError != "" {
			fmt.Fprintf(w, "  %s/%s: %d ADD, %d DEL failures, %d wrong; first error: %s\n", s.Name, s.Stack, s.AddFailures, s.DelFailures, s.WrongAttach, s.FirstError)
		}
	}
}

func ratio(theirs, ours float64, n int) string {
	if n == 0 || ours <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", theirs/ours)
}
