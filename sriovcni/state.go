package sriovcni

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/multinet-io/multinet/internal/statefile"
	"github.com/multinet-io/multinet/vfmanager"
)

// DefaultStateDir holds the plugin's state when MULTINET_STATE_DIR is unset. It is on disk (not
// /run) so DEL after a reboot still finds what ADD changed.
const DefaultStateDir = "/var/lib/cni/multinet/sriov"

// EnvStateDir overrides the state root for the binaries (read in cmd/); the plugin then uses
// <dir>/sriov.
const EnvStateDir = "MULTINET_STATE_DIR"

// Original is what a VF looked like before the first container took it: what DEL puts back.
type Original struct {
	// Admin is nil when the PF does not report the VF (nothing to restore).
	Admin *vfmanager.VFState `json:"admin,omitempty"`
	// Netdev, MAC and MTU of the VF's kernel interface in the host; empty in DPDK mode.
	Netdev string `json:"netdev,omitempty"`
	MAC    string `json:"mac,omitempty"`
	MTU    int    `json:"mtu,omitempty"`
	Up     bool   `json:"up,omitempty"`
	// NetdevID identifies the netdev whatever it is called and wherever it is (netdevIdentity).
	NetdevID string `json:"netdevID,omitempty"`
}

// Owner is the per-VF ownership record: which attachment holds the VF now.
type Owner struct {
	ContainerID string    `json:"containerID"`
	IfName      string    `json:"ifName"`
	Netns       string    `json:"netns"`
	Network     string    `json:"network"`
	Since       time.Time `json:"since"`
	Original    Original  `json:"original"`
}

// Cache is what ADD records for one attachment (container ID + ifname) before it touches the
// host, so DEL, CHECK and GC work from it alone, after a restart or a reboot.
type Cache struct {
	ContainerID string          `json:"containerID"`
	IfName      string          `json:"ifName"`
	Netns       string          `json:"netns"`
	Network     string          `json:"network"`
	NetConf     json.RawMessage `json:"netconf"`
	CNIArgs     string          `json:"cniArgs,omitempty"`
	VF          string          `json:"vf"`
	PF          string          `json:"pf"`
	PFNetdev    string          `json:"pfNetdev,omitempty"`
	VFIndex     int             `json:"vfIndex"`
	DPDK        bool            `json:"dpdk"`
	Driver      string          `json:"driver"`
	// MAC is the MAC the pod interface was given (empty: the VF kept its own).
	MAC      string   `json:"mac,omitempty"`
	Original Original `json:"original"`
}

// store lays out the state directory:
//
//	cache/<containerID>-<ifname>.json   one per attachment
//	vf/<BDF>.json                       ownership record of a VF
//	lock/<BDF>.lock, lock/pf-<BDF>.lock host-wide flocks per VF and per PF
//	quarantine/<file>.<unixnano>        state files that could not be read, moved aside
//	problems/<unixnano>-<BDF>.json      what DEL/GC/ADD could not undo (Problem), for doctor
type store struct{ dir string }

// errCorrupt marks a state file whose content does not parse: it is quarantined, not retried.
var errCorrupt = statefile.ErrCorrupt

// Problem is a machine-readable record of something the plugin could not undo or could not
// know, left for an operator (multinetctl doctor) instead of failing DEL forever.
type Problem struct {
	Time        time.Time `json:"time"`
	VF          string    `json:"vf,omitempty"`
	ContainerID string    `json:"containerID,omitempty"`
	IfName      string    `json:"ifName,omitempty"`
	// File is the quarantined state file, if any; Quarantined where it went.
	File        string `json:"file,omitempty"`
	Quarantined string `json:"quarantined,omitempty"`
	Reason      string `json:"reason"`
	// Left says what may still be wrong on the host.
	Left string `json:"left,omitempty"`
}

func (s store) problemDir() string { return filepath.Join(s.dir, "problems") }

// recordProblem writes p for doctor; failing to write it only logs (DEL goes on).
func (s store) recordProblem(log *slog.Logger, p Problem) {
	p.Time = time.Now().UTC()
	path := filepath.Join(s.problemDir(), fmt.Sprintf("%d-%s.json", p.Time.UnixNano(), safeName(p.VF)))
	if err := writeJSON(path, p); err != nil {
		log.Error("cannot record a problem for doctor", "problem", p.Reason, "err", err)
		return
	}
	log.Warn("problem recorded for doctor", "record", path, "reason", p.Reason, "left", p.Left)
}

// quarantine moves an unreadable state file aside so it blocks no DEL, GC or ADD again, logs
// the file and the reason, and records it for doctor. It returns where the file went.
func (s store) quarantine(log *slog.Logger, path string, reason error, p Problem) string {
	dst := filepath.Join(s.dir, "quarantine", fmt.Sprintf("%s.%d", filepath.Base(path), time.Now().UnixNano()))
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err == nil {
		err = os.Rename(path, dst)
		if err != nil {
			log.Error("cannot quarantine a corrupt state file", "file", path, "err", err)
			dst = ""
		}
	}
	log.Warn("state file quarantined", "file", path, "quarantined", dst, "reason", reason)
	p.File, p.Quarantined = path, dst
	if p.Reason == "" {
		p.Reason = reason.Error()
	}
	s.recordProblem(log, p)
	return dst
}

func (s store) cachePath(containerID, ifName string) string {
	return filepath.Join(s.dir, "cache", safeName(containerID+"-"+ifName)+".json")
}

func (s store) ownerPath(vf string) string {
	return filepath.Join(s.dir, "vf", safeName(vf)+".json")
}

func safeName(s string) string { return statefile.SafeName(s) }

var (
	writeJSON  = statefile.Write
	readJSON   = statefile.Read
	removeFile = statefile.Remove
)

func (s store) loadCache(containerID, ifName string) (*Cache, error) {
	return statefile.Load[Cache](s.cachePath(containerID, ifName))
}

func (s store) loadOwner(vf string) (*Owner, error) {
	return statefile.Load[Owner](s.ownerPath(vf))
}

// allCaches lists every attachment the plugin holds state for. A corrupt cache is quarantined
// and skipped: one bad file must not stop GC for every other attachment.
func (s store) allCaches(log *slog.Logger) ([]*Cache, error) {
	paths, err := filepath.Glob(filepath.Join(s.dir, "cache", "*.json"))
	if err != nil {
		return nil, err
	}
	var out []*Cache
	var errs []error
	for _, p := range paths {
		c := &Cache{}
		if ok, err := readJSON(p, c); errors.Is(err, errCorrupt) {
			s.quarantine(log, p, err, Problem{Left: "the attachment's VF, IPAM lease and device-info were not released by GC"})
		} else if err != nil {
			errs = append(errs, err)
		} else if ok {
			out = append(out, c)
		}
	}
	return out, errors.Join(errs...)
}

// lockTimeout bounds the wait for another ADD/DEL on the same VF; they take well under a
// second, so a holder this slow is stuck and the caller gets a clear error instead of a hang.
var lockTimeout = 60 * time.Second

type flock = statefile.Flock

func (s store) lock(name, what string) (*flock, error) {
	return statefile.Lock(filepath.Join(s.dir, "lock", safeName(name)+".lock"), what, lockTimeout)
}
