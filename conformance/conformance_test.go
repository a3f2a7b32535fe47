package conformance

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The checked-in table parses, names each case once and gives every entry a reason.
func TestDeviationsTable(t *testing.T) {
	devs, err := Deviations()
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) == 0 {
		t.Fatal("empty deviations table")
	}
}

// Summary counts a case as upstream only when it agreed and is not listed, and fails on a
// case no package judged and on a deviation naming no case.
func TestSummary(t *testing.T) {
	devs, _ := Deviations()
	var devID string
	for id := range devs {
		devID = id
		break
	}
	corpus, results := t.TempDir(), t.TempDir()
	write := func(dir, name string, v any) {
		b, _ := json.Marshal(v)
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, f := range Files {
		cases := []map[string]string{{"id": f + "-a"}}
		rs := []Result{{ID: f + "-a", File: f, AsUp: true}}
		if i == 0 {
			cases = append(cases, map[string]string{"id": devID})
			rs = append(rs, Result{ID: devID, File: f, Deviation: true, Detail: "x"})
		}
		write(corpus, f, cases)
		write(results, strings.ReplaceAll(f, "/", "_"), rs)
	}
	line, err := Summary(corpus, results)
	if err == nil {
		t.Fatalf("every other deviation names no case of this corpus, yet no error (%s)", line)
	}
	if !strings.Contains(line, "5/6 cases as upstream, 1 documented deviations") {
		t.Errorf("line %q", line)
	}
	// Drop a result: the case counts as not run.
	write(results, strings.ReplaceAll(Files[1], "/", "_"), []Result{})
	if _, err := Summary(corpus, results); err == nil || !strings.Contains(err.Error(), Files[1]+" "+Files[1]+"-a: not run") {
		t.Errorf("missing result: %v", err)
	}
}
