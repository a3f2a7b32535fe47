// Package conformance runs the upstream projects' own test inputs (Multus and NAD-client
// annotation parsing, SR-IOV device plugin configs and selectors, sriov-cni netconfs,
// network-status building) through our code. The cases are data kept outside the repository
// (../shared/conformance next to the clone, or $MULTINET_CONFORMANCE_DIR); this package finds
// them, holds the checked-in table of deliberate deviations, and judges every case against it
// in both directions: an undocumented difference fails, and so does a documented deviation
// that now behaves as upstream does.
//
// The packages under test run their cases from their own tests (they reach unexported code);
// `make conformance` collects their results and prints one summary (cmd/summary).
package conformance

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// Files are the corpus files, relative to the corpus directory, in summary order.
var Files = []string{
	"multus-selection.json",
	"network-status.json",
	"sriovcni-netconfs.json",
	"sriovdp-configs/cases.json",
	"sriovdp-configs/index.json",
}

// EnvDir names the corpus directory; EnvResults a directory each run writes its results to.
const (
	EnvDir     = "MULTINET_CONFORMANCE_DIR"
	EnvResults = "MULTINET_CONFORMANCE_RESULTS"
)

// Dir returns the corpus directory: $MULTINET_CONFORMANCE_DIR, else shared/conformance next to
// the repository (CI clones the repo beside shared/).
func Dir() (string, error) {
	if d := os.Getenv(EnvDir); d != "" {
		return d, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(root), "shared", "conformance"), nil
}

func repoRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", errors.New("conformance: no go.mod above the working directory")
		}
		d = parent
	}
}

// Case is one corpus case: its id and its fields, undecoded.
type Case struct {
	ID     string
	File   string
	Fields map[string]json.RawMessage
}

// Has reports whether the case sets the field.
func (c Case) Has(key string) bool { _, ok := c.Fields[key]; return ok }

// Str returns a string field ("" when absent or not a string).
func (c Case) Str(key string) string {
	var s string
	_ = json.Unmarshal(c.Fields[key], &s)
	return s
}

// Decode decodes a field into v; absent fields leave v alone.
func (c Case) Decode(key string, v any) error {
	raw, ok := c.Fields[key]
	if !ok {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("case %s: field %s: %w", c.ID, key, err)
	}
	return nil
}

// ExpectError reports whether upstream rejects the input.
func (c Case) ExpectError() bool { return c.Str("expect") == "error" }

// Read loads one corpus file's cases. A case of index.json is one config file, named by it.
func Read(dir, file string) ([]Case, error) {
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return nil, err
	}
	var raws []map[string]json.RawMessage
	if err := json.Unmarshal(b, &raws); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	out := make([]Case, 0, len(raws))
	for i, r := range raws {
		c := Case{File: file, Fields: r}
		if c.ID = c.Str("id"); c.ID == "" {
			c.ID = c.Str("file")
		}
		if c.ID == "" {
			return nil, fmt.Errorf("%s: case %d has neither id nor file", file, i)
		}
		out = append(out, c)
	}
	return out, nil
}

// Load reads a corpus file for a test. Without the corpus the test is skipped, except in CI
// (CI=true), where a missing corpus is a failure: the tier must not pass by running nothing.
func Load(t testing.TB, file string) (dir string, cases []Case) {
	t.Helper()
	dir, err := Dir()
	if err == nil {
		if _, err = os.Stat(dir); err == nil {
			cases, err = Read(dir, file)
			if err == nil {
				return dir, cases
			}
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("conformance corpus: %v (set %s)", err, EnvDir)
	}
	t.Skipf("conformance corpus not found (%v); set %s to run it", err, EnvDir)
	return "", nil
}

// Deviation is a case where we deliberately differ from upstream.
type Deviation struct {
	ID     string `json:"id"`
	Reason string `json:"reason"`
}

//go:embed deviations.json
var deviationsJSON []byte

var (
	devOnce sync.Once
	devs    map[string]Deviation
	devErr  error
)

// Deviations returns the checked-in table, by case id.
func Deviations() (map[string]Deviation, error) {
	devOnce.Do(func() {
		var list []Deviation
		if devErr = json.Unmarshal(deviationsJSON, &list); devErr != nil {
			return
		}
		devs = map[string]Deviation{}
		for _, d := range list {
			if d.ID == "" || strings.TrimSpace(d.Reason) == "" {
				devErr = fmt.Errorf("deviations.json: entry %+v needs an id and a reason", d)
				return
			}
			if _, dup := devs[d.ID]; dup {
				devErr = fmt.Errorf("deviations.json: %s listed twice", d.ID)
				return
			}
			devs[d.ID] = d
		}
	})
	return devs, devErr
}

// Outcome is what our code did with a case compared to upstream: Differ is "" when it behaved
// as upstream does, else what we did instead.
type Outcome struct{ Differ string }

// Same is the outcome of a case we handle as upstream does.
func Same() Outcome { return Outcome{} }

// Differs is the outcome of a case we handle otherwise; the message says how.
func Differs(format string, a ...any) Outcome { return Outcome{Differ: fmt.Sprintf(format, a...)} }

// Result is one judged case, as written to the results directory.
type Result struct {
	ID        string `json:"id"`
	File      string `json:"file"`
	AsUp      bool   `json:"asUpstream"`
	Deviation bool   `json:"deviation"`
	Detail    string `json:"detail,omitempty"`
}

// Run judges every case of a corpus file with judge, each as a subtest, and holds the outcome
// to the deviations table both ways.
func Run(t *testing.T, file string, judge func(t *testing.T, c Case) Outcome) {
	t.Helper()
	_, cases := Load(t, file)
	table, err := Deviations()
	if err != nil {
		t.Fatal(err)
	}
	results := make([]Result, 0, len(cases))
	for _, c := range cases {
		var r Result
		t.Run(c.ID, func(t *testing.T) {
			out := judge(t, c)
			dev, listed := table[c.ID]
			r = Result{ID: c.ID, File: file, AsUp: out.Differ == "", Deviation: listed, Detail: out.Differ}
			switch {
			case out.Differ != "" && !listed:
				t.Errorf("differs from upstream (%s: %s) and is not in conformance/deviations.json: %s",
					c.Str("source"), c.Str("origin"), out.Differ)
			case out.Differ == "" && listed:
				t.Errorf("listed in conformance/deviations.json (%q) but now behaves as upstream: remove the entry", dev.Reason)
			}
		})
		results = append(results, r)
	}
	if dir := os.Getenv(EnvResults); dir != "" {
		if err := writeResults(dir, file, results); err != nil {
			t.Fatal(err)
		}
	}
}

func writeResults(dir, file string, rs []Result) error {
	b, err := json.MarshalIndent(rs, "", " ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, strings.ReplaceAll(file, "/", "_")), b, 0o644)
}

// Summary reads the results of a run and checks that every case of the corpus was judged and
// that every deviation names a case. It returns the summary line.
func Summary(corpusDir, resultsDir string) (string, error) {
	table, err := Deviations()
	if err != nil {
		return "", err
	}
	var problems []string
	total, same, deviations := 0, 0, 0
	known := map[string]bool{}
	for _, f := range Files {
		cases, err := Read(corpusDir, f)
		if err != nil {
			return "", err
		}
		var rs []Result
		b, err := os.ReadFile(filepath.Join(resultsDir, strings.ReplaceAll(f, "/", "_")))
		if err == nil {
			err = json.Unmarshal(b, &rs)
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: no results (%v)", f, err))
		}
		byID := map[string]Result{}
		for _, r := range rs {
			byID[r.ID] = r
		}
		for _, c := range cases {
			known[c.ID] = true
			total++
			r, ok := byID[c.ID]
			switch {
			case !ok:
				problems = append(problems, fmt.Sprintf("%s %s: not run", f, c.ID))
			case r.AsUp && !r.Deviation:
				same++
			case !r.AsUp && r.Deviation:
				deviations++
			default:
				problems = append(problems, fmt.Sprintf("%s %s: outcome disagrees with deviations.json", f, c.ID))
			}
		}
	}
	var ids []string
	for id := range table {
		if !known[id] {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		problems = append(problems, fmt.Sprintf("deviations.json: %s names no case of the corpus", id))
	}
	line := fmt.Sprintf("conformance: %d/%d cases as upstream, %d documented deviations", same, total, deviations)
	if len(problems) > 0 {
		return line, fmt.Errorf("%s", strings.Join(problems, "\n"))
	}
	return line, nil
}
