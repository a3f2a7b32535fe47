package benchmarks

import "fmt"

// Target is one of issue 13's targets for the thick stack, with what this run measured.
type Target struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Limit  float64 `json:"limit"`
	Met    bool    `json:"met"`
	Detail string  `json:"detail"`
}

func (t Target) verdict() string {
	if t.Met {
		return "met"
	}
	return "MISS"
}

// Targets checks issue 13's targets (p50s of one run) against what the report measured; a
// target whose numbers the run does not have (a stack or scenario not run) is left out.
func Targets(r *Report) []Target {
	const ours = "multinet-thick"
	var out []Target
	upTo := func(name string, v, limit float64, detail string) {
		out = append(out, Target{Name: name, Value: v, Limit: limit, Met: v <= limit, Detail: detail})
	}
	for _, sc := range []string{"eth0", "eth0+1vf", "eth0+4"} {
		s := r.find(sc, ours)
		switch {
		case s == nil:
		case s.OwnShareAddP50 > 0: // the agent's own account, no wrapper in the way
			upTo(fmt.Sprintf("own share (total - delegates) on %s <= 3 ms", sc), s.OwnShareAddP50, 3,
				fmt.Sprintf("%.2f ms (ADD %.2f ms; wrapped pass: %.2f)", s.OwnShareAddP50, s.AddP50, s.MetaShareP50))
		case s.ShareCount > 0:
			upTo(fmt.Sprintf("own share (total - delegates) on %s <= 3 ms", sc), s.MetaShareP50, 3,
				fmt.Sprintf("%.2f ms (ADD %.2f ms, wrapped pass)", s.MetaShareP50, s.AddP50))
		}
	}
	ratioTo := func(sc, theirs string, limit float64) {
		s, o := r.find(sc, ours), r.find(sc, theirs)
		if s == nil || o == nil || s.Count == 0 || o.Count == 0 || o.AddP50 <= 0 {
			return
		}
		v := s.AddP50 / o.AddP50
		upTo(fmt.Sprintf("%s ADD <= %.2fx %s's", sc, limit, theirs), v, limit,
			fmt.Sprintf("%.2fx (%.2f vs %.2f ms)", v, s.AddP50, o.AddP50))
	}
	ratioTo("eth0", "multus-thick", 0.6)
	ratioTo("eth0", "multus", 0.4)
	for _, sc := range []string{"eth0+1vf", "eth0+4", "eth0+1vf-x16"} {
		ratioTo(sc, "multus-thick", 0.85)
		ratioTo(sc, "multus", 0.7)
	}
	if s := r.find("eth0+1vf-x16", ours); s != nil && s.Count > 0 && s.AddP50 > 0 {
		v := s.AddP99 / s.AddP50
		upTo("eth0+1vf-x16 ADD p99 <= 3x its p50", v, 3, fmt.Sprintf("%.2fx (p99 %.2f, p50 %.2f ms)", v, s.AddP99, s.AddP50))
		if o := r.find("eth0+1vf-x16", "multus-thick"); o != nil && o.Count > 0 {
			out = append(out, Target{Name: "eth0+1vf-x16 CPU/ADD below multus-thick's", Value: s.PluginCPUP50, Limit: o.PluginCPUP50,
				Met: s.PluginCPUP50 < o.PluginCPUP50, Detail: fmt.Sprintf("%.1f vs %.1f ms", s.PluginCPUP50, o.PluginCPUP50)})
		}
	}
	if m := r.DaemonMem["multinetd"]; m != nil {
		steady := mib(max(m.StartKB, m.EndKB))
		if m.EndKB > 0 {
			upTo("multinetd RSS steady <= 40 MiB", steady, 40, fmt.Sprintf("%.1f MiB (after setup %.1f, after the scenarios %.1f)", steady, mib(m.StartKB), mib(m.EndKB)))
		}
		if m.HerdPeakKB > 0 {
			upTo("multinetd RSS peak in a herd of 200 pods <= 80 MiB", mib(m.HerdPeakKB), 80, fmt.Sprintf("%.1f MiB", mib(m.HerdPeakKB)))
		}
	}
	if s := r.find(HerdScenario, ours); s != nil {
		bad := float64(s.AddFailures + s.DelFailures + s.WrongAttach)
		out = append(out, Target{Name: "herd of 200 pods: no failure", Value: bad, Limit: 0, Met: bad == 0 && !s.Leaks.any(),
			Detail: fmt.Sprintf("%d/%d ADD ok, %d DEL failures, %d wrong, leaks %d/%d/%d/%d", s.Count, s.Count+s.AddFailures, s.DelFailures, s.WrongAttach,
				s.Leaks.Leases, s.Leaks.Netdevs, s.Leaks.VFs, s.Leaks.Files)})
	}
	if r.Scale != nil {
		if g, ok := r.Scale.Daemons["multinetd"]; ok {
			v := mib(g.AfterKB - g.BeforeKB)
			out = append(out, Target{Name: fmt.Sprintf("multinetd RSS growth with %d pods elsewhere + %d NADs < 20 MiB", r.Scale.Pods, r.Scale.NADs),
				Value: v, Limit: 20, Met: v < 20, Detail: fmt.Sprintf("%.1f MiB (%.1f -> %.1f)", v, mib(g.BeforeKB), mib(g.AfterKB))})
		}
	}
	return out
}
