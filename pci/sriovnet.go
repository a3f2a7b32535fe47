package pci

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/k8snetworkplumbingwg/sriovnet"
	utilfs "github.com/k8snetworkplumbingwg/sriovnet/pkg/utils/filesystem"
)

// sriovnet builds absolute /sys/... paths and reads them through one package-level
// filesystem (utilfs.Fs). rootFs is that filesystem with /sys mapped to a SysFS root, so the
// library reads the tree we were given. Because the seam is a global, every sriovnet call goes
// through withSriovnet, one at a time.
type rootFs struct {
	root string
	fs   utilfs.DefaultFs
}

func (f rootFs) p(name string) string {
	if name == DefaultSysfsRoot || strings.HasPrefix(name, DefaultSysfsRoot+"/") {
		return filepath.Join(f.root, strings.TrimPrefix(name, DefaultSysfsRoot))
	}
	return name
}

func (f rootFs) Stat(name string) (os.FileInfo, error)        { return f.fs.Stat(f.p(name)) }
func (f rootFs) Create(name string) (utilfs.File, error)      { return f.fs.Create(f.p(name)) }
func (f rootFs) Rename(a, b string) error                     { return f.fs.Rename(f.p(a), f.p(b)) }
func (f rootFs) MkdirAll(path string, perm os.FileMode) error { return f.fs.MkdirAll(f.p(path), perm) }
func (f rootFs) Chtimes(name string, a, m time.Time) error    { return f.fs.Chtimes(f.p(name), a, m) }
func (f rootFs) RemoveAll(path string) error                  { return f.fs.RemoveAll(f.p(path)) }
func (f rootFs) Remove(name string) error                     { return f.fs.Remove(f.p(name)) }
func (f rootFs) Readlink(name string) (string, error)         { return f.fs.Readlink(f.p(name)) }
func (f rootFs) Symlink(target, name string) error            { return f.fs.Symlink(target, f.p(name)) }
func (f rootFs) ReadFile(name string) ([]byte, error)         { return f.fs.ReadFile(f.p(name)) }
func (f rootFs) TempDir(dir, prefix string) (string, error)   { return f.fs.TempDir(f.p(dir), prefix) }
func (f rootFs) TempFile(dir, prefix string) (utilfs.File, error) {
	return f.fs.TempFile(f.p(dir), prefix)
}
func (f rootFs) ReadDir(name string) ([]os.FileInfo, error) { return f.fs.ReadDir(f.p(name)) }
func (f rootFs) Walk(root string, fn filepath.WalkFunc) error {
	return f.fs.Walk(f.p(root), fn)
}
func (f rootFs) WriteFile(name string, data []byte, perm os.FileMode) error {
	return f.fs.WriteFile(f.p(name), data, perm)
}

var sriovnetMu sync.Mutex

func (s *SysFS) withSriovnet(fn func() error) error {
	sriovnetMu.Lock()
	defer sriovnetMu.Unlock()
	old := utilfs.Fs
	utilfs.Fs = rootFs{root: s.Root}
	defer func() { utilfs.Fs = old }()
	return fn()
}

// Representor returns the switchdev representor netdev of a VF (the host-side port of its
// eswitch), "" when the PF is not in switchdev mode or has none for it. It asks sriovnet:
// the kernel's devlink ports of the PF first, then the PF's netdevs' phys_port_name in sysfs.
func (s *SysFS) Representor(vfAddr string) (string, error) {
	pf, index, err := s.PFOf(vfAddr)
	if err != nil {
		return "", err
	}
	var rep string
	err = s.withSriovnet(func() error {
		var e error
		rep, e = sriovnet.GetVfRepresentor(pf, index)
		return e
	})
	if errors.Is(err, sriovnet.ErrRepresentorNotFound) {
		return "", nil
	}
	if err != nil {
		// sriovnet reports a PF without switchdev netdevs or without a net directory as a
		// plain read error; a VF without a representor is not an error to our callers.
		if _, serr := os.Stat(s.devPath(pf, "net")); serr != nil {
			return "", nil
		}
		return "", err
	}
	return rep, nil
}
