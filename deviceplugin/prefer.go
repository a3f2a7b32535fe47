package deviceplugin

import "sort"

// prefer picks size devices out of available for kubelet: every must-include device, then as
// many as possible from one NUMA node (the must-include devices' node, else the node with the
// most free devices), and within a node spread across PFs so one PF's failure or bandwidth
// does not hit all of a pod's interfaces.
func prefer(byID map[string]*Device, available, mustInclude []string, size int) []string {
	chosen := []string{}
	taken := map[string]bool{}
	perPF := map[string]int{}
	numaVotes := map[int]int{}
	info := func(id string) (numa int, pf string) {
		if d := byID[id]; d != nil {
			return d.NUMANode(), d.PF()
		}
		return -1, ""
	}
	for _, id := range mustInclude {
		if taken[id] {
			continue
		}
		taken[id] = true
		chosen = append(chosen, id)
		n, pf := info(id)
		perPF[pf]++
		numaVotes[n]++
	}
	need := size - len(chosen)
	if need <= 0 {
		return chosen
	}

	byNUMA := map[int][]string{}
	for _, id := range available {
		if taken[id] {
			continue
		}
		taken[id] = true
		n, _ := info(id)
		byNUMA[n] = append(byNUMA[n], id)
	}
	nodes := make([]int, 0, len(byNUMA))
	for n := range byNUMA {
		nodes = append(nodes, n)
	}
	// Order: the node the must-include devices are on, then nodes able to take the whole
	// request, then by free devices (more first), then by ID for determinism.
	sort.Slice(nodes, func(i, j int) bool {
		a, b := nodes[i], nodes[j]
		if numaVotes[a] != numaVotes[b] {
			return numaVotes[a] > numaVotes[b]
		}
		fa, fb := len(byNUMA[a]) >= need, len(byNUMA[b]) >= need
		if fa != fb {
			return fa
		}
		if len(byNUMA[a]) != len(byNUMA[b]) {
			return len(byNUMA[a]) > len(byNUMA[b])
		}
		return a < b
	})
	for _, n := range nodes {
		if need == 0 {
			break
		}
		picked := spread(byNUMA[n], need, perPF, info)
		chosen = append(chosen, picked...)
		need -= len(picked)
	}
	return chosen
}

// spread takes up to need IDs, each time from the PF that has given the fewest so far.
func spread(ids []string, need int, perPF map[string]int, info func(string) (int, string)) []string {
	queues := map[string][]string{}
	var pfs []string
	sorted := append([]string(nil), ids...)
	sort.Strings(sorted)
	for _, id := range sorted {
		_, pf := info(id)
		if _, ok := queues[pf]; !ok {
			pfs = append(pfs, pf)
		}
		queues[pf] = append(queues[pf], id)
	}
	sort.Strings(pfs)
	var out []string
	for len(out) < need {
		best := ""
		found := false
		for _, pf := range pfs {
			if len(queues[pf]) == 0 {
				continue
			}
			if !found || perPF[pf] < perPF[best] {
				best, found = pf, true
			}
		}
		if !found {
			break
		}
		out = append(out, queues[best][0])
		queues[best] = queues[best][1:]
		perPF[best]++
	}
	return out
}
