// Package fsutil holds the file writes every component's state depends on: one place for
// "replace this file so that a crash leaves either the old or the new content, never half".
package fsutil

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// WriteFileAtomic replaces path with b: a uniquely named temp file in the same directory
// (concurrent writers of one path never share a temp file), fsynced, renamed over path, and
// the directory fsynced so the rename itself survives a power loss. Missing parent
// directories are created 0700.
func WriteFileAtomic(path string, b []byte, perm fs.FileMode) error {
	return WriteAtomic(path, perm, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

// WriteAtomic is WriteFileAtomic with the content streamed by fill (a binary of tens of MB is
// never held in memory). Renaming over a file also replaces an executable that is running:
// the runtime's next exec gets the new inode, the running process keeps the old one (an
// in-place write fails with "text file busy").
func WriteAtomic(path string, perm fs.FileMode, fill func(io.Writer) error) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	err = fill(f)
	if err == nil {
		// CreateTemp makes 0600; the caller's mode is set explicitly, not through the umask.
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := SyncDir(dir); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Remove deletes path and fsyncs its directory, so a removal that was reported done stays
// done after a crash. A missing file is not an error. The temp files of writes of path that
// never finished (a writer killed between its temp file and the rename) go too.
func Remove(path string) error {
	RemoveTemps(path)
	if err := os.Remove(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// RemoveTemps removes what WriteFileAtomic calls of path left behind when the writer died before
// its rename: left there, they outlive the record they were to replace, in every record dir.
func RemoveTemps(path string) {
	tmps, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "."+globEscape(filepath.Base(path))+".tmp-*"))
	for _, t := range tmps {
		os.Remove(t)
	}
}

// globEscape quotes the glob metacharacters of a file name.
func globEscape(s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', '\\':
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return string(b)
}

// SyncDir fsyncs a directory: renames, creations and removals in it become durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	return nil
}
