// Package devpools is the file through which the device plugin tells the node's CNI plugins
// which PCI devices it advertises, in which pool: the sriov plugin refuses a VF that is in no
// pool (one the host keeps for itself, or that no NAD's resource can have been given). The
// device plugin writes it whenever its pools change; readers only read it.
package devpools

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/multinet-io/multinet/internal/fsutil"
)

// DefaultPath is where the device plugin publishes its pools: on disk, so it is there for the
// CNI plugins after a reboot before the device plugin runs again (kubelet then has given out
// nothing new either).
const DefaultPath = "/var/lib/multinet/deviceplugin/pools.json"

// EnvPath overrides DefaultPath for the binaries (read in cmd/).
const EnvPath = "MULTINET_POOLS_FILE"

// File is the published membership.
type File struct {
	// Pools maps a full resource name (prefix/name) to its devices' PCI addresses, sorted.
	Pools map[string][]string `json:"pools"`
	// VhostUser maps a vhostUser pool's full resource name to where its slots are: the
	// vhost-user plugin learns from it where the pod sees a slot (the pool's containerDir)
	// without the NAD repeating it.
	VhostUser map[string]VhostPool `json:"vhostUser,omitempty"`
	Updated   time.Time            `json:"updated"`
}

// VhostPool is a vhostUser pool's slot directories: <Dir>/<slot> on the host, mounted in the
// pod at <ContainerDir>/<slot>.
type VhostPool struct {
	Dir          string `json:"dir"`
	ContainerDir string `json:"containerDir"`
}

// VhostPoolAt returns the vhostUser pool whose slots are under the host directory dir.
func (f *File) VhostPoolAt(dir string) (VhostPool, bool) {
	dir = filepath.Clean(dir)
	for _, v := range f.VhostUser {
		if filepath.Clean(v.Dir) == dir {
			return v, true
		}
	}
	return VhostPool{}, false
}

// PoolOf returns the resource whose pool holds the PCI address, "" when none does.
func (f *File) PoolOf(addr string) string {
	for name, addrs := range f.Pools {
		i := sort.SearchStrings(addrs, addr)
		if i < len(addrs) && addrs[i] == addr {
			return name
		}
	}
	return ""
}

// Write replaces the file atomically and durably: a reader sees the old or the new pools.
func Write(path string, pools map[string][]string) error {
	return WriteFile(path, File{Pools: pools})
}

// WriteFile is Write with the vhostUser pools too; Updated is set here.
func WriteFile(path string, in File) error {
	f := File{Pools: map[string][]string{}, VhostUser: in.VhostUser, Updated: time.Now().UTC()}
	for name, addrs := range in.Pools {
		a := append([]string(nil), addrs...)
		sort.Strings(a)
		f.Pools[name] = a
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("pools file %s: %w", path, err)
	}
	if err := fsutil.WriteFileAtomic(path, b, 0o644); err != nil {
		return fmt.Errorf("pools file %s: %w", path, err)
	}
	return nil
}

// Read returns the published pools; a missing file is an error wrapping fs.ErrNotExist.
func Read(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pools file: %w", err)
	}
	f := &File{}
	if err := json.Unmarshal(b, f); err != nil {
		return nil, fmt.Errorf("pools file %s: %w", path, err)
	}
	if f.Pools == nil {
		return nil, errors.New("pools file " + path + `: no "pools"`)
	}
	for _, a := range f.Pools {
		sort.Strings(a)
	}
	return f, nil
}
