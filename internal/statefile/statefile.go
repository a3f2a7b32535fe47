// Package statefile is the on-disk state the CNI plugins keep (sriov, vhostuser): JSON
// records written atomically and durably (0600 in 0700 dirs), read back with a corrupt file
// told apart from a missing one, removed with the temp files of a write a kill cut short, and
// host-wide flocks that time out instead of hanging.
package statefile

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/multinet-io/multinet/internal/fsutil"
)

// ErrCorrupt is wrapped by Read's error for a file that is there but not the JSON it should be.
var ErrCorrupt = errors.New("corrupt")

// SafeName makes s one path element.
func SafeName(s string) string { return strings.NewReplacer("/", "_", "\x00", "_").Replace(s) }

// Write replaces a file atomically and durably: a crash leaves the old or the new content.
func Write(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("state %s: %w", path, err)
	}
	if err := fsutil.WriteFileAtomic(path, b, 0o600); err != nil {
		return fmt.Errorf("state %s: %w", path, err)
	}
	return nil
}

// Read reads a state file into v; a missing file is (false, nil), a corrupt one an error
// wrapping ErrCorrupt.
func Read(path string, v any) (bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("state %s: %w", path, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("state %s: %w: %w", path, ErrCorrupt, err)
	}
	return true, nil
}

// Remove deletes a state file and the temp files of its unfinished writes; a missing file is
// not an error.
func Remove(path string) error {
	fsutil.RemoveTemps(path) // of a write cut short by a kill
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("state %s: %w", path, err)
	}
	return nil
}

// Flock is a host-wide exclusive lock on a file, released by Unlock or when the process dies.
type Flock struct{ f *os.File }

// Lock takes the lock file path, waiting at most timeout for another holder; what names the
// locked thing in errors.
func Lock(path, what string, timeout time.Duration) (*Flock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("%s: lock: %w", what, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%s: lock: %w", what, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return &Flock{f}, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("%s: lock %s: %w", what, path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("%s: still locked by another operation after %s (%s)", what, timeout, path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Unlock releases the lock (nil: nothing).
func (l *Flock) Unlock() {
	if l != nil {
		_ = unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
		l.f.Close()
	}
}

// Load reads the record at path into a new T, as Read does: nil and no error when there is none.
func Load[T any](path string) (*T, error) {
	v := new(T)
	if ok, err := Read(path, v); !ok {
		return nil, err
	}
	return v, nil
}
