package benchmarks

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func msd(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }

func TestSummarizeCountsFailuresApart(t *testing.T) {
	plain := []sample{
		{add: msd(10), del: msd(5)},
		{add: msd(20), del: msd(6)},
		{add: msd(30), delErr: errors.New("bridge: no IP ranges specified")},
		{addErr: errors.New("pod x: network y: boom")},
	}
	shares := []sample{{add: msd(12), addShare: msd(4), delShare: msd(2), hasShare: true}}
	r := summarize("eth0+1vf", "multus", plain, shares)
	if r.Count != 3 || r.AddFailures != 1 || r.DelFailures != 1 || r.DelCount != 2 {
		t.Fatalf("counts: %+v", r)
	}
	// A failed ADD has no latency: it must not pull the percentiles down.
	if r.AddP50 != 20 || r.AddMax != 30 || r.DelP99 != 6 {
		t.Fatalf("percentiles: %+v", r)
	}
	if r.MetaShareP50 != 4 || r.MetaShareDelP50 != 2 || r.ShareCount != 1 {
		t.Fatalf("share: %+v", r)
	}
	if r.FirstError != "bridge: no IP ranges specified" {
		t.Fatalf("first error %q", r.FirstError)
	}
}

// The JSON keys are a contract with whoever reads benchmarks/out/latest.json.
func TestReportJSONShape(t *testing.T) {
	rep := &Report{Machine: MachineInfo{Cores: 2, Kernel: "6.12"}}
	for _, st := range []string{"multinet", "multus"} {
		rep.Scenarios = append(rep.Scenarios, summarize("eth0", st, []sample{{add: msd(50), del: msd(40)}}, nil))
	}
	p := filepath.Join(t.TempDir(), "latest.json")
	if err := rep.WriteJSON(p); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	var got struct {
		Machine   map[string]any   `json:"machine"`
		Scenarios []map[string]any `json:"scenarios"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Machine["cores"] != 2.0 || got.Machine["kernel"] != "6.12" {
		t.Fatalf("machine: %v", got.Machine)
	}
	if len(got.Scenarios) != 2 {
		t.Fatalf("scenarios: %v", got.Scenarios)
	}
	for _, k := range []string{"name", "stack", "count", "add_p50_ms", "add_p90_ms", "add_p99_ms", "add_max_ms", "del_p50_ms", "del_p99_ms", "meta_share_p50_ms", "leaks"} {
		if _, ok := got.Scenarios[0][k]; !ok {
			t.Errorf("scenario entry lacks %q: %s", k, b)
		}
	}
	if got.Scenarios[1]["stack"] != "multus" || got.Scenarios[0]["add_p50_ms"] != 50.0 {
		t.Fatalf("values: %v", got.Scenarios)
	}
	var out bytes.Buffer
	rep.Table(&out)
	if !strings.Contains(out.String(), "eth0           multus / multinet              ADD 1.00x  DEL 1.00x") {
		t.Fatalf("table lacks the ratio line:\n%s", out.String())
	}
}

func TestScenarioNames(t *testing.T) {
	var names []string
	for _, s := range Scenarios {
		names = append(names, s.Name)
	}
	if strings.Join(names, " ") != "eth0 eth0+1vf eth0+4 eth0+1vf-x16 herd200" {
		t.Fatalf("scenario names %v", names)
	}
	if Scenarios[2].attachments() != 4 || Scenarios[3].concurrency() != 16 || Scenarios[0].attachments() != 0 ||
		Scenarios[4].concurrency() != 200 || !Scenarios[4].Optional || !Scenarios[4].ThickOnly {
		t.Fatal("scenario shapes")
	}
}

func TestPairedComparesBackToBackPods(t *testing.T) {
	multinet := []sample{{add: msd(10), del: msd(10)}, {add: msd(40), del: msd(10)}, {add: msd(10), del: msd(10)}, {addErr: errors.New("x")}}
	multus := []sample{{add: msd(20), del: msd(5)}, {add: msd(20), del: msd(5)}, {add: msd(30), del: msd(5)}, {add: msd(1), del: msd(1)}}
	p := pair("eth0", "multinet", "multus", multinet, multus)
	// The failed pair is skipped; ratios 2, 0.5, 3 -> median 2.
	if p.Pairs != 3 || p.AddRatioP50 != 2 || p.AddMultinetWn != 2 || p.DelRatioP50 != 0.5 || p.DelMultinetWn != 0 {
		t.Fatalf("%+v", p)
	}
}
