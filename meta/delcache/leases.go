package delcache

import (
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	"golang.org/x/sys/unix"
)

// hostLocalDataDir is host-local's default dataDir.
const hostLocalDataDir = "/var/lib/cni/networks"

// sweepCutLeases removes the host-local lease files of the list's network that name no
// container. host-local creates a lease file and only then writes the container ID into it: a
// plugin killed in between (the agent's whole process group SIGKILLed, as the kernel kills a
// container) leaves an empty file that no DEL releases, since DEL releases by container ID, and
// the address is lost for good. Under host-local's own lock of the network no Reserve is half
// way, so an empty lease file there is one a dead writer left.
func sweepCutLeases(list *libcni.NetworkConfigList, log *slog.Logger) {
	for _, pl := range list.Plugins {
		var c struct {
			IPAM struct {
				Type    string `json:"type"`
				DataDir string `json:"dataDir"`
			} `json:"ipam"`
		}
		if json.Unmarshal(pl.Bytes, &c) != nil || c.IPAM.Type != "host-local" {
			continue
		}
		dataDir := c.IPAM.DataDir
		if dataDir == "" {
			dataDir = hostLocalDataDir
		}
		dir := filepath.Join(dataDir, list.Name)
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		// host-local's lock: flock on <dir>/lock (its disk backend's FileLock).
		lk, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDONLY|os.O_CREATE, 0o600)
		if err != nil {
			continue
		}
		if unix.Flock(int(lk.Fd()), unix.LOCK_EX) == nil {
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if net.ParseIP(e.Name()) == nil || !e.Type().IsRegular() {
					continue
				}
				if fi, err := e.Info(); err == nil && fi.Size() == 0 {
					if os.Remove(filepath.Join(dir, e.Name())) == nil {
						log.Warn("released a host-local lease its writer died before naming a container", "network", list.Name, "ip", e.Name())
					}
				}
			}
			unix.Flock(int(lk.Fd()), unix.LOCK_UN)
		}
		lk.Close()
	}
}
