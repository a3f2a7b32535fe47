package devpools

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dp", "pools.json")
	if _, err := Read(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Read of a missing file: %v, want fs.ErrNotExist", err)
	}
	if err := Write(path, map[string][]string{"intel.com/vf": {"0000:3b:01.2", "0000:3b:01.0"}, "empty.io/pool": {}}); err != nil {
		t.Fatal(err)
	}
	f, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]string{"0000:3b:01.0": "intel.com/vf", "0000:3b:01.2": "intel.com/vf", "0000:3b:01.1": ""} {
		if got := f.PoolOf(addr); got != want {
			t.Errorf("PoolOf(%s) = %q, want %q", addr, got, want)
		}
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, %v", fi.Mode(), err)
	}
	if err := os.WriteFile(path, []byte(`{"pools":`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(path); err == nil {
		t.Error("Read of a truncated file succeeded")
	}
}
