package statefile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestWriteReadRemove(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cache", "c1-net1.json")
	var v struct{ A string }
	if ok, err := Read(path, &v); ok || err != nil {
		t.Fatalf("missing file: %v %v", ok, err)
	}
	if err := Write(path, map[string]string{"A": "x"}); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	if ok, err := Read(path, &v); !ok || err != nil || v.A != "x" {
		t.Fatalf("read back: %v %v %+v", ok, err, v)
	}
	os.WriteFile(path, []byte("{"), 0o600)
	if _, err := Read(path, &v); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("corrupt file: %v, want ErrCorrupt", err)
	}
	// The temp file of a write a kill cut short goes with its record.
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-123")
	os.WriteFile(tmp, nil, 0o600)
	if err := Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := Remove(path); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "*")); len(m) != 0 {
		t.Fatalf("left: %v", m)
	}
}

// Writers of one record at once (a retried ADD racing its first attempt) each have their own
// temp file: every write succeeds and the record is always whole.
func TestConcurrentWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "slot", "s.json")
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				if err := Write(path, map[string]int{"w": w, "i": i}); err != nil {
					errs <- err
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var v map[string]int
	if ok, err := Read(path, &v); !ok || err != nil {
		t.Fatalf("%v %v", ok, err)
	}
}

func TestLockTimesOut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock", "vf.lock")
	l, err := Lock(path, "vf 0000:00:12.0", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := Lock(path, "vf 0000:00:12.0", 100*time.Millisecond); err == nil || !strings.Contains(err.Error(), "vf 0000:00:12.0: still locked") {
		t.Fatalf("second lock: %v", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Errorf("the wait took %s", time.Since(start))
	}
	l.Unlock()
	l2, err := Lock(path, "vf", time.Second)
	if err != nil {
		t.Fatalf("after unlock: %v", err)
	}
	l2.Unlock()
}
