package fsutil

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// Writers of the same path at once (two CNI calls for one attachment, a retried ADD racing
// its first attempt) each get their own temp file: every write succeeds, the file holds one
// writer's whole content, and no temp file is left behind.
func TestWriteFileAtomicConcurrentWriters(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			content := bytes.Repeat([]byte(fmt.Sprintf("writer-%d;", w)), 1000)
			for i := 0; i < 25; i++ {
				if err := WriteFileAtomic(path, content, 0o644); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent write: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var whole bool
	for w := 0; w < 8; w++ {
		if bytes.Equal(b, bytes.Repeat([]byte(fmt.Sprintf("writer-%d;", w)), 1000)) {
			whole = true
		}
	}
	if !whole {
		t.Errorf("file holds a mix of writers (%d bytes)", len(b))
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("dir after writes = %v, want only state.json", names)
	}
}

// The mode is the caller's, whatever the umask, and an existing file is replaced.
func TestWriteFileAtomicModeAndReplace(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	path := filepath.Join(t.TempDir(), "sub", "f")
	if err := WriteFileAtomic(path, []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(path, []byte("two"), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode = %v, want 0644", st.Mode().Perm())
	}
	if b, _ := os.ReadFile(path); string(b) != "two" {
		t.Errorf("content = %q, want two", b)
	}
}

// A write that cannot complete leaves the old file and no temp file.
func TestWriteFileAtomicFailureLeavesOld(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := WriteFileAtomic(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A directory where the file should go: the rename fails.
	blocked := filepath.Join(dir, "blocked")
	os.MkdirAll(filepath.Join(blocked, "x"), 0o700)
	if err := WriteFileAtomic(blocked, []byte("new"), 0o600); err == nil {
		t.Fatal("write over a non-empty directory succeeded")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("dir entries = %d, want f and blocked only (temp file left?)", len(entries))
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Errorf("content = %q", b)
	}
	if err := Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := Remove(path); err != nil {
		t.Errorf("removing a missing file: %v", err)
	}
}

// A writer killed between its temp file and the rename leaves the temp file; removing the record
// removes it too, and nothing of another record.
func TestRemoveTakesTempsOfUnfinishedWrites(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ctr[1].json")
	if err := WriteFileAtomic(path, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{".ctr[1].json.tmp-123", ".ctr[1].json.tmp-456", ".other.json.tmp-1", "other.json"} {
		os.WriteFile(filepath.Join(dir, name), []byte("{"), 0o600)
	}
	if err := Remove(path); err != nil {
		t.Fatal(err)
	}
	es, _ := os.ReadDir(dir)
	var left []string
	for _, e := range es {
		left = append(left, e.Name())
	}
	if strings.Join(left, ",") != ".other.json.tmp-1,other.json" {
		t.Errorf("left after Remove: %v", left)
	}
}
