package deviceplugin

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// prepareSlot makes a vhost-user slot directory ready for a new pod: a real directory (a symlink
// in its place is removed, never followed) emptied of whatever the last pod or anyone else left
// there. The one thing kept is the socket a client-mode slot's host side (the vswitch) owns. A
// server-mode socket that still accepts connections means a process still serves the slot:
// the allocation is refused rather than its socket pulled away.
func prepareSlot(s *Slot) error {
	socketName := filepath.Base(s.HostSocket)
	if fi, err := os.Lstat(s.HostDir); err == nil && !fi.IsDir() {
		if err := os.Remove(s.HostDir); err != nil {
			return fmt.Errorf("slot dir %s is not a directory: %w", s.HostDir, err)
		}
	}
	if err := os.MkdirAll(s.HostDir, 0o755); err != nil {
		return err
	}
	fd, err := unix.Open(s.HostDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("slot dir %s: %w", s.HostDir, err)
	}
	defer unix.Close(fd)
	if s.Mode == VhostServer && socketLive(s.HostSocket) {
		return fmt.Errorf("slot %s: a process still serves its socket %s", s.HostDir, s.HostSocket)
	}
	keep := ""
	if s.Mode == VhostClient {
		var st unix.Stat_t
		if unix.Fstatat(fd, socketName, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK {
			keep = socketName
		}
	}
	if err := emptyDirAt(fd, keep); err != nil {
		return fmt.Errorf("slot dir %s: empty it: %w", s.HostDir, err)
	}
	return nil
}

// emptyDirAt removes every entry of the open directory fd but keep, descending into
// subdirectories through their own descriptors opened with O_NOFOLLOW: a symlink is removed
// as a link, and nothing outside the directory is ever reached through one.
func emptyDirAt(fd int, keep string) error {
	names, err := readDirNames(fd)
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		if n == keep {
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstatat(fd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("%s: %w", n, err))
			}
			continue
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			sub, err := unix.Openat(fd, n, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", n, err))
				continue
			}
			err = emptyDirAt(sub, "")
			unix.Close(sub)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", n, err))
				continue
			}
			if err := unix.Unlinkat(fd, n, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("%s: %w", n, err))
			}
			continue
		}
		if err := unix.Unlinkat(fd, n, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("%s: %w", n, err))
		}
	}
	return errors.Join(errs...)
}

// readDirNames lists a directory through a duplicate of its descriptor (os.File takes
// ownership of the descriptor it wraps).
func readDirNames(fd int) ([]string, error) {
	dup, err := unix.Dup(fd)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), "slot")
	defer f.Close()
	return f.Readdirnames(-1)
}

// socketLive reports whether a unix socket at path accepts connections.
func socketLive(path string) bool {
	c, err := net.DialTimeout("unix", path, 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
