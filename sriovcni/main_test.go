package sriovcni

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/multinet-io/multinet/devpools"
)

// TestMain points the pool check's default pools file (read by the built binary) at a file that does not exist: a device plugin running on this machine must not
// decide these tests. The tests of the check give their own file.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sriovcni-test")
	if err != nil {
		panic(err)
	}
	os.Setenv(devpools.EnvPath, filepath.Join(dir, "no-pools.json"))
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
