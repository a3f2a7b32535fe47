package vhostuser

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/multinet-io/multinet/devinfo"
)

// Del removes the attachment's port, the slot's stale socket, its device-info file and its
// records. It works from the cache ADD wrote; without one there is nothing to undo (ADD failed
// and cleaned up, or an earlier DEL finished): success, as the CNI spec wants.
func (p *Plugin) Del(a Args) error {
	st := p.store()
	c, err := st.loadCache(a.ContainerID, a.IfName)
	if err != nil {
		return fmt.Errorf("vhostuser: DEL %s/%s: %w", a.ContainerID, a.IfName, err)
	}
	if c == nil {
		return nil
	}
	conf, err := parse(c.NetConf)
	if err != nil {
		return fmt.Errorf("vhostuser: DEL %s/%s: cached netconf: %w", a.ContainerID, a.IfName, err)
	}
	log, closeLog := p.logger(conf)
	defer closeLog()
	o, err := p.ovs(conf)
	if err != nil {
		return err
	}
	lk, err := st.lock(c.Slot)
	if err != nil {
		return fmt.Errorf("vhostuser: %w", err)
	}
	defer lk.Unlock()
	if err := p.undo(o, c); err != nil {
		log.Error("DEL failed", "slot", c.Slot.ID, "err", err)
		return err
	}
	log.Info("DEL done", "slot", c.Slot.ID, "port", c.Port)
	return nil
}

// undo releases one attachment, under the slot's lock. A slot that another attachment took
// over since (this is a late DEL) keeps its port and socket; this attachment's own files go.
// On failure the cache stays, so the runtime's retry of DEL finishes the job.
func (p *Plugin) undo(o *ovs, c *Cache) error {
	st := p.store()
	owner, err := st.loadOwner(c.Slot)
	if err != nil {
		return fmt.Errorf("vhostuser: slot %s: %w", c.Slot.ID, err)
	}
	mine := owner == nil || owner.ContainerID == c.ContainerID && owner.IfName == c.IfName
	var errs []error
	if mine {
		if err := o.delPort(c.Port); err != nil {
			errs = append(errs, fmt.Errorf("delete port %s: %w", c.Port, err))
		}
		if err := removeStaleSocket(c.Slot.HostSocket); err != nil {
			errs = append(errs, fmt.Errorf("socket: %w", err))
		}
	}
	if c.DevInfo != "" {
		// ENOTDIR: a path under a non-directory cannot exist, so there is nothing to remove.
		if err := devinfo.Remove(c.DevInfo); err != nil && !errors.Is(err, syscall.ENOTDIR) {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("vhostuser: slot %s: %w", c.Slot.ID, errors.Join(errs...))
	}
	if mine && owner != nil {
		if err := removeFile(st.ownerPath(c.Slot)); err != nil {
			return err
		}
	}
	return removeFile(st.cachePath(c.ContainerID, c.IfName))
}

// GC releases this network's attachments the runtime no longer lists as valid (CNI 1.1): pods
// whose DEL never came keep no port and no slot.
func (p *Plugin) GC(a Args) error {
	nc := &types.NetConf{}
	if err := json.Unmarshal(a.StdinData, nc); err != nil {
		return fmt.Errorf("vhostuser: GC: parse netconf: %w", err)
	}
	valid := map[[2]string]bool{}
	for _, v := range nc.ValidAttachments {
		valid[[2]string{v.ContainerID, v.IfName}] = true
	}
	paths, err := filepath.Glob(filepath.Join(p.StateDir, "cache", "*.json"))
	if err != nil {
		return fmt.Errorf("vhostuser: GC: %w", err)
	}
	var errs []error
	for _, path := range paths {
		c := &Cache{}
		if ok, err := readJSON(path, c); err != nil || !ok {
			if err != nil {
				errs = append(errs, fmt.Errorf("vhostuser: GC: %w", err))
			}
			continue
		}
		if c.Network != nc.Name || valid[[2]string{c.ContainerID, c.IfName}] {
			continue
		}
		if err := p.Del(Args{ContainerID: c.ContainerID, IfName: c.IfName}); err != nil {
			errs = append(errs, fmt.Errorf("vhostuser: GC %s/%s: %w", c.ContainerID, c.IfName, err))
		}
	}
	return errors.Join(errs...)
}
