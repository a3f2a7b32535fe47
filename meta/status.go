package meta

import (
	"encoding/json"
	"fmt"

	types100 "github.com/containernetworking/cni/pkg/types/100"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	nadutils "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/utils"

	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/pci"
)

// statuses builds network-status, with device-info from the delegate's file, the device
// plugin's file, or the result's pciID/socketPath, in that order. podGws (from podGateways)
// gives the pod's default-route gateways per interface: an interface whose default route was
// removed reports none.
func (p *Plugin) statuses(containerID string, ds []Delegate, results []*types100.Result, podGws map[string][]string) ([]nadv1.NetworkStatus, error) {
	var out []nadv1.NetworkStatus
	for i, d := range ds {
		if d.Auxiliary {
			continue
		}
		info := p.deviceInfo(containerID, d, results[i])
		sts, err := nadutils.CreateNetworkStatuses(results[i], d.Name, d.IsDefault, info)
		if err == nil && len(sts) == 0 {
			// A result without pod interfaces (a pre-0.3 delegate) still attached something:
			// one entry with its IPs, on the interface name it was given.
			var st *nadv1.NetworkStatus
			st, err = nadutils.CreateNetworkStatus(results[i], d.Name, d.IsDefault, info)
			sts = []*nadv1.NetworkStatus{st}
		}
		if err != nil {
			return nil, fmt.Errorf("network %s: %w", d.Name, err)
		}
		var gws []string
		for _, ip := range results[i].IPs {
			if ip.Gateway != nil {
				gws = append(gws, ip.Gateway.String())
			}
		}
		for _, st := range sts {
			if st.Interface == "" {
				st.Interface = d.IfName
			}
			if actual, ok := podGws[st.Interface]; ok {
				st.Gateway = actual
			}
			out = append(out, statusEntry(d, st, gws))
		}
	}
	return out, nil
}

func (p *Plugin) deviceInfo(containerID string, d Delegate, r *types100.Result) *nadv1.DeviceInfo {
	list, err := d.List()
	if err == nil {
		if info, _ := devinfo.Load(p.DevInfo.CNIPath(list.Name, containerID, d.IfName)); info != nil {
			return info
		}
	}
	if d.ResourceName != "" && d.DeviceID != "" {
		if info, _ := devinfo.Load(p.DevInfo.DPPath(d.ResourceName, d.DeviceID)); info != nil {
			return info
		}
	}
	for _, itf := range r.Interfaces {
		switch {
		case itf.PciID != "":
			pf := ""
			if p.Sys != nil {
				pf, _, _ = p.Sys.PFOf(itf.PciID)
			}
			return devinfo.PCI(itf.PciID, pf)
		case itf.SocketPath != "":
			return &nadv1.DeviceInfo{Type: nadv1.DeviceInfoTypeVHostUser, Version: nadv1.DeviceInfoVersion,
				VhostUser: &nadv1.VhostDevice{Path: itf.SocketPath}}
		}
	}
	if d.DeviceID != "" && pci.ValidAddress(d.DeviceID) {
		pf := ""
		if p.Sys != nil {
			pf, _, _ = p.Sys.PFOf(d.DeviceID)
		}
		return devinfo.PCI(d.DeviceID, pf)
	}
	return nil
}

func marshalStatus(st []nadv1.NetworkStatus) ([]byte, error) { return json.MarshalIndent(st, "", "  ") }

// statusEntry is a delegate's line of network-status. gateways are the result's gateway
// addresses: a default route without a next hop (host-local writes them so) is reported with
// its interface's gateway instead of the NAD client's "<nil>".
func statusEntry(d Delegate, st *nadv1.NetworkStatus, gateways []string) nadv1.NetworkStatus {
	out := *st
	var gws []string
	for _, g := range st.Gateway {
		if g == "<nil>" || g == "" {
			gws = append(gws, gateways...)
			continue
		}
		gws = append(gws, g)
	}
	out.Gateway = dedupe(gws)
	out.Name = d.Name
	if out.Interface == "" {
		out.Interface = d.IfName
	}
	// The NAD client already marked the one interface of a default delegate that carries the
	// default route; every other interface of that delegate is not the pod's default.
	out.Default = d.IsDefault && st.Default
	return out
}

func dedupe(in []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
