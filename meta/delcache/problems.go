package delcache

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"

	"github.com/multinet-io/multinet/internal/fsutil"
)

// Problem is what a DEL could not undo and went past so that the pod can still be deleted,
// recorded under <cacheDir>/problems/ for `multinetctl doctor` (sriovcni keeps the same kind
// of record for VFs).
type Problem struct {
	Time        time.Time `json:"time"`
	ContainerID string    `json:"containerID"`
	Pod         string    `json:"pod,omitempty"`
	Network     string    `json:"network"`
	IfName      string    `json:"ifName"`
	Reason      string    `json:"reason"`
	// Left says what may still be on the host.
	Left string `json:"left,omitempty"`
}

// RecordProblem writes p under cacheDir/problems (failures only logged: DEL goes on).
func RecordProblem(log *slog.Logger, cacheDir string, p Problem) {
	p.Time = time.Now().UTC()
	b, _ := json.MarshalIndent(p, "", "  ")
	path := filepath.Join(cacheDir, "problems", fmt.Sprintf("%d-%s-%s.json", p.Time.UnixNano(), p.ContainerID, p.IfName))
	if err := fsutil.WriteFileAtomic(path, b, 0o600); err != nil {
		log.Error("cannot record a problem for doctor", "problem", p.Reason, "err", err)
		return
	}
	log.Warn("problem recorded for doctor", "record", path, "reason", p.Reason, "left", p.Left)
}

// withoutMissingPlugins drops from a delegate's chain the plugins exec cannot find (an
// uninstalled or renamed plugin): libcni would fail the whole DEL on the first of them,
// forever, and the pod could never be deleted. What the rest of the chain holds (an IP lease, a
// host-side link) is still released. It returns the plugin types it dropped.
func withoutMissingPlugins(list *libcni.NetworkConfigList, exec invoke.Exec, paths []string) (*libcni.NetworkConfigList, []string) {
	var kept []*libcni.PluginConfig
	var missing []string
	for _, pl := range list.Plugins {
		if _, err := exec.FindInPath(pl.Network.Type, paths); err != nil {
			missing = append(missing, pl.Network.Type)
			continue
		}
		kept = append(kept, pl)
	}
	if len(missing) == 0 {
		return list, nil
	}
	out := *list
	out.Plugins = kept
	return &out, missing
}
