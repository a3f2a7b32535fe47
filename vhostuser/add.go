package vhostuser

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/multinet-io/multinet/devinfo"
)

// Add turns the netconf's slot into an OVS port and returns the CNI result. On failure nothing
// it changed stays changed: no port, no device-info, no ownership record.
func (p *Plugin) Add(a Args) (*current.Result, error) {
	conf, err := LoadConf(a.StdinData)
	if err != nil {
		return nil, err
	}
	log, closeLog := p.logger(conf)
	defer closeLog()
	log = log.With("slot", conf.DeviceID, "container", a.ContainerID, "ifname", a.IfName)
	if a.ContainerID == "" || a.IfName == "" {
		return nil, fmt.Errorf("vhostuser: slot %s: container ID and interface name are required", conf.DeviceID)
	}
	res, err := p.add(log, conf, a)
	if err != nil {
		log.Error("ADD failed", "err", err)
		return nil, err
	}
	log.Info("ADD done")
	return res, nil
}

func (p *Plugin) add(log *slog.Logger, conf *NetConf, a Args) (_ *current.Result, err error) {
	slot, err := p.resolveSlot(conf)
	if err != nil {
		return nil, err
	}
	o, err := p.ovs(conf)
	if err != nil {
		return nil, err
	}
	st := p.store()
	lk, err := st.lock(slot)
	if err != nil {
		return nil, fmt.Errorf("vhostuser: %w", err)
	}
	defer lk.Unlock()

	if prev, err := st.loadCache(a.ContainerID, a.IfName); err != nil {
		return nil, fmt.Errorf("vhostuser: slot %s: %w", slot.ID, err)
	} else if prev != nil {
		return nil, fmt.Errorf("vhostuser: slot %s: container %s already has interface %s (slot %s); DEL it first", slot.ID, a.ContainerID, a.IfName, prev.Slot.ID)
	}
	owner, err := st.loadOwner(slot)
	if err != nil {
		return nil, fmt.Errorf("vhostuser: slot %s: %w", slot.ID, err)
	}
	if owner != nil {
		if netnsAlive(owner.Netns) {
			return nil, fmt.Errorf("vhostuser: slot %s: in use by container %s interface %s (netns %s)", slot.ID, owner.ContainerID, owner.IfName, owner.Netns)
		}
		// Its pod's namespace is gone and its DEL never came: take the slot; the port of that
		// name is replaced below in the same transaction that adds ours.
		log.Warn("taking over a slot whose owner's netns is gone", "previousContainer", owner.ContainerID, "previousNetns", owner.Netns)
		if prev, _ := st.loadCache(owner.ContainerID, owner.IfName); prev != nil && prev.DevInfo != "" {
			_ = devinfo.Remove(prev.DevInfo)
		}
		_ = removeFile(st.cachePath(owner.ContainerID, owner.IfName))
	}
	// What DEL needs goes to disk before OVS is touched.
	c := &Cache{ContainerID: a.ContainerID, IfName: a.IfName, Netns: a.Netns, Network: conf.Name,
		NetConf: a.StdinData, Slot: slot, Port: slot.PortName(), Bridge: conf.Bridge, OVSDB: conf.OVSDB,
		DevInfo: p.DevInfo.CNIPath(conf.Name, a.ContainerID, a.IfName)}
	if err := writeJSON(st.cachePath(a.ContainerID, a.IfName), c); err != nil {
		return nil, fmt.Errorf("vhostuser: slot %s: %w", slot.ID, err)
	}
	if err := writeJSON(st.ownerPath(slot), &Owner{ContainerID: a.ContainerID, IfName: a.IfName, Netns: a.Netns, Since: time.Now().UTC()}); err != nil {
		_ = removeFile(st.cachePath(a.ContainerID, a.IfName))
		return nil, fmt.Errorf("vhostuser: slot %s: %w", slot.ID, err)
	}
	defer func() {
		if err != nil {
			// The same undo DEL runs; its own failure is reported with the ADD's.
			if uerr := p.undo(o, c); uerr != nil {
				err = fmt.Errorf("%w (and undoing it: %v)", err, uerr)
			}
		}
	}()

	if err := os.MkdirAll(filepath.Dir(slot.HostSocket), 0o755); err != nil {
		return nil, fmt.Errorf("vhostuser: slot %s: %w", slot.ID, err)
	}
	if err := removeStaleSocket(slot.HostSocket); err != nil {
		return nil, fmt.Errorf("vhostuser: slot %s: stale socket: %w", slot.ID, err)
	}
	want := c.wantPort(conf)
	if err := o.addPort(want); err != nil {
		// The transaction checks the bridge: one call fewer than asking first.
		if strings.Contains(err.Error(), "no bridge named "+conf.Bridge) {
			return nil, fmt.Errorf("vhostuser: slot %s: field \"bridge\": %s not found in OVSDB %s", slot.ID, conf.Bridge, conf.OVSDB)
		}
		return nil, fmt.Errorf("vhostuser: slot %s: add port %s to %s: %w", slot.ID, c.Port, conf.Bridge, err)
	}
	// ovs-vsctl waited for ovs-vswitchd: a port it could not open has an error or no ofport now
	// (ovs-vsctl itself exits 0 then, only printing a warning).
	got, perr, ofport, err := o.getPort(c.Port)
	if err != nil {
		return nil, fmt.Errorf("vhostuser: slot %s: read back port %s: %w", slot.ID, c.Port, err)
	}
	if perr != "" || ofport <= 0 {
		return nil, fmt.Errorf("vhostuser: slot %s: ovs-vswitchd refused port %s on %s: %s (ofport %d)", slot.ID, c.Port, conf.Bridge, perr, ofport)
	}
	if diff := diffPort(want, *got); diff != "" {
		return nil, fmt.Errorf("vhostuser: slot %s: port %s: %s", slot.ID, c.Port, diff)
	}
	if err := devinfo.Save(c.DevInfo, devInfo(slot)); err != nil {
		return nil, fmt.Errorf("vhostuser: slot %s: %w", slot.ID, err)
	}
	log.Info("port added", "port", c.Port, "bridge", conf.Bridge, "socket", slot.HostSocket, "ofport", ofport)
	return result(c, conf), nil
}

// diffPort names the first setting OVS has other than asked.
func diffPort(want, got Port) string {
	switch {
	case got.Bridge != want.Bridge:
		return fmt.Sprintf("on bridge %s, want %s", got.Bridge, want.Bridge)
	case got.ServerPath != want.ServerPath:
		return fmt.Sprintf("vhost-server-path is %q, want %q", got.ServerPath, want.ServerPath)
	case got.VLAN != want.VLAN:
		return fmt.Sprintf("vlan tag is %d, want %d", got.VLAN, want.VLAN)
	case got.MTU != want.MTU:
		return fmt.Sprintf("mtu_request is %d, want %d", got.MTU, want.MTU)
	}
	for _, k := range sortedKeys(want.IDs) {
		if got.IDs[k] != want.IDs[k] {
			return fmt.Sprintf("external_ids:%s is %q, want %q (the port belongs to another attachment)", k, got.IDs[k], want.IDs[k])
		}
	}
	return ""
}
