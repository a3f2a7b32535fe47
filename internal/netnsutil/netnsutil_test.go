package netnsutil

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/plugins/pkg/testutils"
)

func TestGone(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, nil, 0o644)
	for path, want := range map[string]bool{"": false, filepath.Join(dir, "missing"): true, plain: true} {
		if got := Gone(path); got != want {
			t.Errorf("Gone(%q) = %v, want %v", path, got, want)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	path := n.Path()
	if Gone(path) {
		t.Errorf("Gone(%s) = true for a live namespace", path)
	}
	n.Close()
	testutils.UnmountNS(n)
	if !Gone(path) {
		t.Errorf("Gone(%s) = false after the namespace was removed", path)
	}
}
