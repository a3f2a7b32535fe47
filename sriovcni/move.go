package sriovcni

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// A VF netdev is renamed only inside a private, empty network namespace on its way between the
// host and the pod: the host never sees it under a temporary name, so udev and NetworkManager,
// which rename and reconfigure the host's netdevs on every rename event, cannot race with the
// move (host-device moved to this in plugins v1.6.0 for the same reason). In the empty
// namespace no name can collide.

// moveIn moves the VF's netdev from the host into the pod under the requested name, sets its
// MAC and brings it up. It returns the interface's MAC and the name it has in the pod ("" while
// it is not in the pod), also on failure, for the undo.
func (p *Plugin) moveIn(v *vfInfo, conf *NetConf, ifName string, podNS ns.NetNS) (mac, inPod string, err error) {
	l, err := netlinksafe.LinkByName(v.netdevs[0])
	if err != nil {
		return "", "", fmt.Errorf("sriov: vf %s: netdev %s: %w", v.addr, v.netdevs[0], err)
	}
	hostName := l.Attrs().Name
	if err := podNS.Do(func(ns.NetNS) error {
		if _, err := netlinksafe.LinkByName(ifName); err == nil {
			return fmt.Errorf("sriov: vf %s: netns %s already has an interface %s", v.addr, podNS.Path(), ifName)
		}
		return nil
	}); err != nil {
		return "", "", err
	}
	tempNS, done, err := p.tempNS(v.addr)
	if err != nil {
		return "", "", err
	}
	defer done()
	// The kernel refuses to rename a running interface.
	if err := netlink.LinkSetDown(l); err != nil {
		return "", "", fmt.Errorf("sriov: vf %s: set %s down: %w", v.addr, hostName, err)
	}
	if err := netlink.LinkSetNsFd(l, int(tempNS.Fd())); err != nil {
		return "", "", fmt.Errorf("sriov: vf %s: move %s into a temporary netns: %w", v.addr, hostName, err)
	}
	err = tempNS.Do(func(host ns.NetNS) error {
		tl, err := onlyLink(v.addr)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetName(tl, ifName); err != nil {
			_, lerr := leaveTemp(v.addr, tl, hostName, host)
			return errors.Join(fmt.Errorf("sriov: vf %s: rename %s to %s: %w", v.addr, hostName, ifName, err), lerr)
		}
		if err := netlink.LinkSetNsFd(tl, int(podNS.Fd())); err != nil {
			_, lerr := leaveTemp(v.addr, tl, hostName, host)
			return errors.Join(fmt.Errorf("sriov: vf %s: move %s into netns %s: %w", v.addr, ifName, podNS.Path(), err), lerr)
		}
		return nil
	})
	if err != nil {
		return "", "", err
	}
	inPod = ifName
	err = podNS.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(ifName)
		if err != nil {
			return fmt.Errorf("sriov: vf %s: %s in netns %s: %w", v.addr, ifName, podNS.Path(), err)
		}
		if want := conf.EffectiveMAC; want != nil && l.Attrs().HardwareAddr.String() != want.String() {
			if err := netlink.LinkSetHardwareAddr(l, want); err != nil {
				return fmt.Errorf("sriov: vf %s: set %s mac %s: %w", v.addr, ifName, want, err)
			}
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("sriov: vf %s: set %s up: %w", v.addr, ifName, err)
		}
		mac, err = settledMAC(v.addr, ifName, conf.EffectiveMAC)
		return err
	})
	return mac, inPod, err
}

// onlyLink returns the VF's netdev in the temporary netns: the one link there besides lo (its
// index may have changed on the move).
func onlyLink(vf string) (netlink.Link, error) {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return nil, fmt.Errorf("sriov: vf %s: links of the temporary netns: %w", vf, err)
	}
	for _, l := range links {
		if l.Attrs().Flags&net.FlagLoopback == 0 {
			return l, nil
		}
	}
	return nil, fmt.Errorf("sriov: vf %s: netdev not found in the temporary netns", vf)
}

// leaveTemp moves a netdev out of the temporary netns back to the host under name (under the
// VF's temporary name when that is taken): closing a namespace that still holds it would
// send a physical netdev to the initial netns, not the caller's, and destroy a virtual one.
// It returns the name the netdev has in the host.
func leaveTemp(vf string, l netlink.Link, name string, host ns.NetNS) (string, error) {
	cur := l.Attrs().Name
	if name != "" && cur != name {
		if err := netlink.LinkSetName(l, name); err != nil {
			return cur, fmt.Errorf("sriov: vf %s: rename %s to %s: %w", vf, cur, name, err)
		}
		cur = name
	}
	err := netlink.LinkSetNsFd(l, int(host.Fd()))
	if errors.Is(err, unix.EEXIST) && cur != tmpName(vf) {
		if rerr := netlink.LinkSetName(l, tmpName(vf)); rerr == nil {
			cur = tmpName(vf)
			err = netlink.LinkSetNsFd(l, int(host.Fd()))
		}
	}
	if err != nil {
		return cur, fmt.Errorf("sriov: vf %s: move %s back to the host: %w", vf, cur, err)
	}
	return cur, nil
}

// returnNetdev moves the VF's netdev from the pod (when its netns still exists) to the host and
// restores its name, MAC, MTU and up state.
func (p *Plugin) returnNetdev(log *slog.Logger, c *Cache, podNS ns.NetNS, ifNameIsOurs bool) error {
	tmp := tmpName(c.VF)
	// The temporary name: an ADD or DEL of an older version cut short left it there.
	inPod := []string{tmp}
	if ifNameIsOurs {
		inPod = append(inPod, c.IfName)
	}
	tempNS, done, err := p.tempNS(c.VF)
	if err != nil {
		return err
	}
	defer done()
	// A move cut short by a kill (the agent's, mid-ADD or mid-DEL) left the VF there.
	leftover := false
	_ = tempNS.Do(func(ns.NetNS) error { leftover = holdsNetdev(); return nil })
	moved := leftover
	if podNS != nil && !moved {
		err := podNS.Do(func(host ns.NetNS) error {
			// By its device, not its name: a pod with NET_ADMIN may have renamed it, and a
			// DEL that looked for the name only would drop the record of a VF still in the pod.
			l := findByIdentity(c.Original.NetdevID, host)
			if c.Original.NetdevID == "" {
				l = findOurs(c, inPod...)
			}
			if l == nil {
				return nil
			}
			if err := netlink.LinkSetDown(l); err != nil {
				return fmt.Errorf("sriov: vf %s: set %s down in netns %s: %w", c.VF, l.Attrs().Name, podNS.Path(), err)
			}
			if err := netlink.LinkSetNsFd(l, int(tempNS.Fd())); err != nil {
				return fmt.Errorf("sriov: vf %s: move %s out of netns %s: %w", c.VF, l.Attrs().Name, podNS.Path(), err)
			}
			moved = true
			return nil
		})
		if err != nil {
			return err
		}
	}
	if !moved {
		// In the host: under the temporary name (a move of an older version cut short) or,
		// when the pod's netns vanished, wherever the kernel put it: sysfs finds it by PCI address.
		l := findOurs(c, tmp)
		// The kernel returns a physical netdev from a destroyed netns in a workqueue, so right
		// after the pod's netns went away it may not be back yet: wait for it a little.
		deadline := time.Now().Add(netdevReturnWait)
		for l == nil {
			nds, _ := p.Sys.Netdevs(c.VF)
			if l = findOurs(c, nds...); l != nil || podNS != nil || time.Now().After(deadline) {
				break
			}
			if drv, _ := p.Sys.Driver(c.VF); drv != c.Driver {
				break // rebound: its netdev is gone for good
			}
			time.Sleep(50 * time.Millisecond)
		}
		if l == nil {
			// A VF netdev goes back to the host when its netns is destroyed; only one that no
			// longer exists (VF removed, driver rebound, a simulated VF's veth) is not found.
			log.Warn("VF netdev found neither in the pod nor in the host; nothing to move back", "vf", c.VF)
			return nil
		}
		if err := netlink.LinkSetDown(l); err != nil {
			return fmt.Errorf("sriov: vf %s: set %s down: %w", c.VF, l.Attrs().Name, err)
		}
		if c.Original.Netdev == "" || l.Attrs().Name == c.Original.Netdev {
			return restoreInHost(c, l)
		}
		if err := netlink.LinkSetNsFd(l, int(tempNS.Fd())); err != nil {
			return fmt.Errorf("sriov: vf %s: move %s into a temporary netns: %w", c.VF, l.Attrs().Name, err)
		}
	}
	var name string
	err = tempNS.Do(func(host ns.NetNS) error {
		l, err := onlyLink(c.VF)
		if err != nil {
			return err
		}
		if name, err = leaveTemp(c.VF, l, c.Original.Netdev, host); err == nil {
			return nil
		}
		// Back where it came from, under a name no one holds, so that the records (kept
		// for the DEL that retries) still say where it is: left here, closing the namespace
		// would send a VF to the initial netns and destroy a veth.
		from := host
		if podNS != nil && moved && !leftover {
			from = podNS
		}
		if rerr := netlink.LinkSetName(l, randomTmpName()); rerr != nil {
			return errors.Join(err, rerr)
		}
		return errors.Join(err, netlink.LinkSetNsFd(l, int(from.Fd())))
	})
	if err != nil {
		return err
	}
	if name != c.Original.Netdev {
		// The VF stays usable under its current name (the next ADD finds it through sysfs);
		// failing DEL over a name taken meanwhile would only block the pod's deletion.
		log.Warn("cannot give the VF netdev its original name back", "vf", c.VF, "name", name, "original", c.Original.Netdev)
	}
	l := findOurs(c, name)
	if l == nil {
		return fmt.Errorf("sriov: vf %s: netdev %s not in the host after the move", c.VF, name)
	}
	return restoreInHost(c, l)
}

// restoreInHost restores the original MAC, MTU and up state of the VF's netdev l in the host.
func restoreInHost(c *Cache, l netlink.Link) error {
	o := c.Original
	name := l.Attrs().Name
	if o.MAC != "" && l.Attrs().HardwareAddr.String() != o.MAC {
		mac, _ := parseMAC(o.MAC)
		if err := netlink.LinkSetHardwareAddr(l, mac); err != nil {
			return fmt.Errorf("sriov: vf %s: restore %s mac %s: %w", c.VF, name, o.MAC, err)
		}
	}
	if o.MTU != 0 && l.Attrs().MTU != o.MTU {
		if err := netlink.LinkSetMTU(l, o.MTU); err != nil {
			return fmt.Errorf("sriov: vf %s: restore %s mtu %d: %w", c.VF, name, o.MTU, err)
		}
	}
	if o.Up {
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("sriov: vf %s: set %s up: %w", c.VF, name, err)
		}
	}
	return nil
}
