package fsutil

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// OpenAppendInDir opens dir/rel for appending (a log file), creating it 0600 and missing
// directories below dir 0700. No component below dir may be a symlink (each is opened with
// openat and O_NOFOLLOW, so a link planted anywhere on the way is refused, not followed), and
// the file must be a regular file with one link owned by us: a root process writing there can
// never be steered onto /etc/nologin or a device. dir itself is the operator's and may be a
// symlink.
func OpenAppendInDir(dir, rel string) (*os.File, error) {
	rel = filepath.Clean(rel)
	if filepath.IsAbs(rel) || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return nil, fmt.Errorf("%s: not a path below %s", rel, dir)
	}
	full := filepath.Join(dir, rel)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open %s: %w", full, err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	parts := strings.Split(rel, "/")
	for _, c := range parts[:len(parts)-1] {
		nfd, err := unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOENT {
			if err = unix.Mkdirat(fd, c, 0o700); err == nil || err == unix.EEXIST {
				nfd, err = unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			}
		}
		unix.Close(fd)
		if err != nil {
			return nil, fmt.Errorf("open %s: component %s: %w (symlinks are not followed)", full, c, err)
		}
		fd = nfd
	}
	// O_NONBLOCK: a FIFO planted in place of the file must not hang the caller.
	ffd, err := unix.Openat(fd, parts[len(parts)-1], unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o600)
	unix.Close(fd)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w (symlinks are not followed)", full, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(ffd, &st); err != nil {
		unix.Close(ffd)
		return nil, fmt.Errorf("open %s: %w", full, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		err = fmt.Errorf("not a regular file")
	case st.Nlink != 1:
		err = fmt.Errorf("has %d hard links", st.Nlink)
	case int(st.Uid) != os.Geteuid():
		err = fmt.Errorf("owned by uid %d, not by us", st.Uid)
	case st.Mode&0o777 != 0o600:
		err = unix.Fchmod(ffd, 0o600)
	}
	if err != nil {
		unix.Close(ffd)
		return nil, fmt.Errorf("open %s: %w", full, err)
	}
	return os.NewFile(uintptr(ffd), full), nil
}

// OpenLogFile opens a configured log file: file is relative to dir or an absolute path inside
// it; anything outside dir is refused. See OpenAppendInDir for what is never followed.
func OpenLogFile(dir, file string) (*os.File, error) {
	rel := file
	if filepath.IsAbs(file) {
		r, err := filepath.Rel(filepath.Clean(dir), filepath.Clean(file))
		if err != nil {
			return nil, fmt.Errorf("log file %s is outside the log dir %s", file, dir)
		}
		rel = r
	}
	rel = filepath.Clean(rel)
	if rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return nil, fmt.Errorf("log file %s is outside the log dir %s", file, dir)
	}
	return OpenAppendInDir(dir, rel)
}
