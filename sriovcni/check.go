package sriovcni

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/multinet-io/multinet/vfmanager"
)

// Check verifies that the attachment is still what ADD made it: the VF still belongs to it,
// its admin settings are those asked for, and (netdev mode) the pod's interface exists, is up,
// is the VF, and has the MAC and addresses of the prevResult.
func (p *Plugin) Check(a Args) error { return p.CheckContext(context.Background(), a) }

// CheckContext is Check under ctx.
func (p *Plugin) CheckContext(ctx context.Context, a Args) error {
	conf, err := LoadConf(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	if conf.PrevResult == nil {
		return fmt.Errorf("sriov: vf %s: CHECK needs a prevResult", conf.DeviceID)
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return fmt.Errorf("sriov: vf %s: prevResult: %w", conf.DeviceID, err)
	}
	st := p.store()
	c, err := st.loadCache(a.ContainerID, a.IfName)
	if err != nil {
		return err
	}
	if c == nil {
		return fmt.Errorf("sriov: vf %s: no attachment for container %s interface %s", conf.DeviceID, a.ContainerID, a.IfName)
	}
	if owner, err := st.loadOwner(c.VF); err != nil {
		return err
	} else if owner == nil || owner.ContainerID != a.ContainerID || owner.IfName != a.IfName {
		who := "nobody"
		if owner != nil {
			who = "container " + owner.ContainerID
		}
		return fmt.Errorf("sriov: vf %s: owned by %s, not container %s", c.VF, who, a.ContainerID)
	}
	if drv, err := p.Sys.Driver(c.VF); err != nil {
		return err
	} else if drv != c.Driver {
		return fmt.Errorf("sriov: vf %s: bound to %q, was %q at ADD", c.VF, drv, c.Driver)
	}
	if conf.HasAdminSettings() {
		m, closeNL, err := p.newManager()
		if err != nil {
			return err
		}
		stNow, err := m.ReadVF(c.PFNetdev, c.VFIndex)
		closeNL()
		switch {
		case errors.Is(err, vfmanager.ErrVFNotReported) && !conf.NeedsPF(c.DPDK):
			// Only a MAC, which the netdev check below covers, on a PF without a VF list.
		case err != nil:
			return fmt.Errorf("sriov: vf %s: %w", c.VF, err)
		}
		if mm := conf.VF.Mismatches(stNow); err == nil && len(mm) > 0 {
			return fmt.Errorf("sriov: vf %s: admin settings changed: %s", c.VF, strings.Join(mm, "; "))
		}
	}

	var want *current.Interface
	for _, i := range prev.Interfaces {
		if i.Name == a.IfName {
			want = i
		}
	}
	if want == nil {
		return fmt.Errorf("sriov: vf %s: prevResult has no interface %s", c.VF, a.IfName)
	}
	if want.PciID != "" && want.PciID != c.VF {
		return fmt.Errorf("sriov: vf %s: prevResult names pci device %s", c.VF, want.PciID)
	}
	if !c.DPDK {
		podNS, err := ns.GetNS(a.Netns)
		if err != nil {
			return fmt.Errorf("sriov: vf %s: netns %q: %w", c.VF, a.Netns, err)
		}
		defer podNS.Close()
		err = podNS.Do(func(ns.NetNS) error {
			l, err := netlinksafe.LinkByName(a.IfName)
			if err != nil {
				return fmt.Errorf("sriov: vf %s: interface %s in netns %s: %w", c.VF, a.IfName, a.Netns, err)
			}
			if pd := l.Attrs().ParentDev; pd != "" && pd != c.VF {
				return fmt.Errorf("sriov: vf %s: interface %s is device %s", c.VF, a.IfName, pd)
			}
			if want.Mac != "" && !strings.EqualFold(l.Attrs().HardwareAddr.String(), want.Mac) {
				return fmt.Errorf("sriov: vf %s: interface %s has mac %s, want %s", c.VF, a.IfName, l.Attrs().HardwareAddr, want.Mac)
			}
			if l.Attrs().Flags&net.FlagUp == 0 {
				return fmt.Errorf("sriov: vf %s: interface %s is down", c.VF, a.IfName)
			}
			var ips []*current.IPConfig
			for _, ipc := range prev.IPs {
				if ipc.Interface == nil || (*ipc.Interface < len(prev.Interfaces) && prev.Interfaces[*ipc.Interface] == want) {
					ips = append(ips, ipc)
				}
			}
			if err := ip.ValidateExpectedInterfaceIPs(a.IfName, ips); err != nil {
				return fmt.Errorf("sriov: vf %s: %w", c.VF, err)
			}
			if err := ip.ValidateExpectedRoute(prev.Routes); err != nil {
				return fmt.Errorf("sriov: vf %s: %w", c.VF, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if conf.IPAM.Type != "" {
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if _, err := execIPAM(ctx, "CHECK", conf.IPAM.Type, a, a.StdinData); err != nil {
			return fmt.Errorf("sriov: vf %s: %w", c.VF, err)
		}
	}
	return nil
}
