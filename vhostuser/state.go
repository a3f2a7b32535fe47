package vhostuser

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultStateDir holds the plugin's state when MULTINET_STATE_DIR is unset; on disk so DEL
// after a reboot still finds the port ADD made.
const DefaultStateDir = "/var/lib/cni/multinet/vhostuser"

// EnvStateDir overrides the state root for the binary (read in cmd/); the plugin then uses
// <dir>/vhostuser.
const EnvStateDir = "MULTINET_STATE_DIR"

// Slot is one vhost-user socket slot as this attachment uses it.
type Slot struct {
	ID              string `json:"id"`
	HostSocket      string `json:"hostSocket"`
	ContainerSocket string `json:"containerSocket"`
}

// key names the slot's lock and ownership record: the host socket is what two pods must never
// share, and slot names repeat across resource prefixes.
func (s Slot) key() string {
	h := sha256.Sum256([]byte(s.HostSocket))
	return s.ID + "-" + hex.EncodeToString(h[:4])
}

// PortName is the OVS port of a slot: fixed per slot (at most 15 bytes, the kernel's limit that
// some OVS tools still assume), so a leftover from the slot's previous owner is found and replaced.
func (s Slot) PortName() string {
	h := sha256.Sum256([]byte(s.HostSocket))
	return "vhu" + hex.EncodeToString(h[:6])
}

// Owner is the slot's ownership record: which attachment holds it now.
type Owner struct {
	ContainerID string    `json:"containerID"`
	IfName      string    `json:"ifName"`
	Netns       string    `json:"netns"`
	Since       time.Time `json:"since"`
}

// Cache is what ADD records for one attachment before it touches OVS, so DEL and CHECK work
// from it alone.
type Cache struct {
	ContainerID string          `json:"containerID"`
	IfName      string          `json:"ifName"`
	Netns       string          `json:"netns"`
	Network     string          `json:"network"`
	NetConf     json.RawMessage `json:"netconf"`
	Slot        Slot            `json:"slot"`
	Port        string          `json:"port"`
	Bridge      string          `json:"bridge"`
	OVSDB       string          `json:"ovsdb"`
	DevInfo     string          `json:"devinfo,omitempty"`
}

// store lays out the state directory:
//
//	cache/<containerID>-<ifname>.json   one per attachment
//	slot/<slot key>.json                ownership record
//	lock/<slot key>.lock                host-wide flock per slot
type store struct{ dir string }

func safeName(s string) string { return strings.NewReplacer("/", "_", "\x00", "_").Replace(s) }

func (s store) cachePath(containerID, ifName string) string {
	return filepath.Join(s.dir, "cache", safeName(containerID+"-"+ifName)+".json")
}

func (s store) ownerPath(sl Slot) string { return filepath.Join(s.dir, "slot", sl.key()+".json") }

// writeJSON replaces a file atomically and durably.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("state %s: %w", path, err)
	}
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("state %s: %w", path, err)
	}
	_, werr := f.Write(b)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, path)
	}
	if werr != nil {
		os.Remove(tmp)
		return fmt.Errorf("state %s: %w", path, werr)
	}
	return nil
}

func readJSON(path string, v any) (bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("state %s: %w", path, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("state %s: corrupt: %w", path, err)
	}
	return true, nil
}

func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("state %s: %w", path, err)
	}
	return nil
}

func (s store) loadCache(containerID, ifName string) (*Cache, error) {
	c := &Cache{}
	ok, err := readJSON(s.cachePath(containerID, ifName), c)
	if !ok {
		return nil, err
	}
	return c, nil
}

func (s store) loadOwner(sl Slot) (*Owner, error) {
	o := &Owner{}
	ok, err := readJSON(s.ownerPath(sl), o)
	if !ok {
		return nil, err
	}
	return o, nil
}

// lockTimeout bounds the wait for another ADD/DEL on the same slot.
var lockTimeout = 60 * time.Second

type flock struct{ f *os.File }

func (s store) lock(sl Slot) (*flock, error) {
	path := filepath.Join(s.dir, "lock", sl.key()+".lock")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("slot %s: lock: %w", sl.ID, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("slot %s: lock: %w", sl.ID, err)
	}
	deadline := time.Now().Add(lockTimeout)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return &flock{f}, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("slot %s: lock %s: %w", sl.ID, path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("slot %s: still locked by another operation after %s (%s)", sl.ID, lockTimeout, path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (l *flock) unlock() {
	if l != nil {
		_ = unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
		l.f.Close()
	}
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
