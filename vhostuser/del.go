package vhostuser

import (
	"errors"
	"fmt"
	"syscall"

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
	defer lk.unlock()
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
