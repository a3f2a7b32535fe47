package cniinstall

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/multinet-io/multinet/internal/fsutil"
)

// InstallBinaries copies every regular executable file of from into to (created 0755 when
// missing): each through a temp file in to, fsynced, mode 0755, renamed over the old one, so a
// plugin that is running during an upgrade keeps running and the next exec gets the new file
// whole (a plain copy over it fails with "text file busy", Multus #1221). A file whose content
// is already the same is left alone. It returns the names it wrote.
func InstallBinaries(from, to string) (written []string, err error) {
	entries, err := os.ReadDir(from)
	if err != nil {
		return nil, fmt.Errorf("install binaries: %w", err)
	}
	if err := os.MkdirAll(to, 0o755); err != nil {
		return nil, fmt.Errorf("install binaries: %w", err)
	}
	var names []string
	for _, e := range entries {
		st, err := os.Stat(filepath.Join(from, e.Name())) // an image may link a binary: its target counts
		if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
			continue
		}
		names = append(names, e.Name())
	}
	sort.Strings(names)
	if len(names) == 0 {
		return nil, fmt.Errorf("install binaries: no executable file in %s", from)
	}
	for _, n := range names {
		src, dst := filepath.Join(from, n), filepath.Join(to, n)
		// Temp files of an install killed before its rename.
		fsutil.RemoveTemps(dst)
		same, err := sameFile(src, dst)
		if err != nil {
			return written, fmt.Errorf("install %s: %w", dst, err)
		}
		if same {
			continue
		}
		if err := copyAtomic(src, dst); err != nil {
			return written, fmt.Errorf("install %s: %w", n, err)
		}
		written = append(written, n)
	}
	return written, nil
}

func copyAtomic(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return fsutil.WriteAtomic(dst, 0o755, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}

// sameFile tells whether dst is already a 0755 regular file with src's content, compared
// block by block (no hash of two whole binaries when the sizes already differ).
func sameFile(src, dst string) (bool, error) {
	ds, err := os.Stat(dst)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	ss, err := os.Stat(src)
	if err != nil {
		return false, err
	}
	if !ds.Mode().IsRegular() || ds.Mode().Perm() != 0o755 || ds.Size() != ss.Size() {
		return false, nil
	}
	a, err := os.Open(src)
	if err != nil {
		return false, err
	}
	defer a.Close()
	b, err := os.Open(dst)
	if err != nil {
		return false, err
	}
	defer b.Close()
	ba, bb := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		na, ea := io.ReadFull(a, ba)
		nb, eb := io.ReadFull(b, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		if ea == io.EOF || ea == io.ErrUnexpectedEOF {
			return eb == ea, nil
		}
		if ea != nil {
			return false, ea
		}
		if eb != nil {
			return false, eb
		}
	}
}
