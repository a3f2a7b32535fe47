package vhostuser

import (
	"errors"
	"fmt"
)

// Check verifies that the attachment's port exists in OVS with the settings ADD gave it.
func (p *Plugin) Check(a Args) error {
	conf, err := LoadConf(a.StdinData)
	if err != nil {
		return err
	}
	c, err := p.store().loadCache(a.ContainerID, a.IfName)
	if err != nil {
		return fmt.Errorf("vhostuser: CHECK %s/%s: %w", a.ContainerID, a.IfName, err)
	}
	if c == nil {
		return fmt.Errorf("vhostuser: CHECK %s/%s: no attachment recorded (ADD never ran or failed)", a.ContainerID, a.IfName)
	}
	o, err := p.ovs(conf)
	if err != nil {
		return err
	}
	got, perr, ofport, err := o.getPort(c.Port)
	if errors.Is(err, errNoPort) {
		return fmt.Errorf("vhostuser: slot %s: port %s is missing from OVS", c.Slot.ID, c.Port)
	}
	if err != nil {
		return fmt.Errorf("vhostuser: slot %s: %w", c.Slot.ID, err)
	}
	if perr != "" || ofport <= 0 {
		return fmt.Errorf("vhostuser: slot %s: port %s: ovs-vswitchd reports %q (ofport %d)", c.Slot.ID, c.Port, perr, ofport)
	}
	if d := diffPort(c.wantPort(conf), *got); d != "" {
		return fmt.Errorf("vhostuser: slot %s: port %s: %s", c.Slot.ID, c.Port, d)
	}
	return nil
}
