package vhostuser

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"path/filepath"
	"sort"
	"time"

	"github.com/multinet-io/multinet/internal/statefile"
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

func safeName(s string) string { return statefile.SafeName(s) }

func (s store) cachePath(containerID, ifName string) string {
	return filepath.Join(s.dir, "cache", safeName(containerID+"-"+ifName)+".json")
}

func (s store) ownerPath(sl Slot) string { return filepath.Join(s.dir, "slot", sl.key()+".json") }

var (
	writeJSON  = statefile.Write
	readJSON   = statefile.Read
	removeFile = statefile.Remove
)

func (s store) loadCache(containerID, ifName string) (*Cache, error) {
	return statefile.Load[Cache](s.cachePath(containerID, ifName))
}

func (s store) loadOwner(sl Slot) (*Owner, error) {
	return statefile.Load[Owner](s.ownerPath(sl))
}

// lockTimeout bounds the wait for another ADD/DEL on the same slot.
var lockTimeout = 60 * time.Second

type flock = statefile.Flock

func (s store) lock(sl Slot) (*flock, error) {
	return statefile.Lock(filepath.Join(s.dir, "lock", sl.key()+".lock"), "slot "+sl.ID, lockTimeout)
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
