// Package sriovcni is the SR-IOV CNI plugin (`"type": "sriov"`): it hands a VF to a pod, either
// its kernel netdev moved into the pod's network namespace (netdev mode) or, for a VF bound to
// vfio-pci or another userspace driver, only its admin settings and device-info (DPDK mode), and
// puts everything back on DEL. Netconfs written for the upstream sriov-cni work unchanged.
//
// The package API (LoadConf, Plugin.Add/Del/Check/GC/Status over Args) is what cmd/sriov wraps
// for the CNI binary and what a daemon calls in-process.
package sriovcni

import (
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/multinet-io/multinet/internal/cniargs"
	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/vfmanager"
)

// NetConf is the plugin's network configuration, with upstream sriov-cni's field names.
type NetConf struct {
	types.NetConf

	DeviceID  string  `json:"deviceID"`
	PCIBusID  string  `json:"pciBusID,omitempty"` // set by some meta-plugins; not used
	VLAN      *int    `json:"vlan,omitempty"`
	VLANQoS   *int    `json:"vlanQoS,omitempty"`
	VLANProto *string `json:"vlanProto,omitempty"`
	MAC       string  `json:"mac,omitempty"`
	SpoofChk  string  `json:"spoofchk,omitempty"`
	Trust     string  `json:"trust,omitempty"`
	LinkState string  `json:"link_state,omitempty"`
	MinTxRate *int    `json:"min_tx_rate,omitempty"`
	MaxTxRate *int    `json:"max_tx_rate,omitempty"`
	LogLevel  string  `json:"logLevel,omitempty"`
	LogFile   string  `json:"logFile,omitempty"`

	RuntimeConfig struct {
		MAC string   `json:"mac,omitempty"`
		IPs []string `json:"ips,omitempty"`
	} `json:"runtimeConfig,omitempty"`

	// EffectiveMAC is the MAC the interface gets: runtimeConfig.mac, else CNI_ARGS MAC=, else
	// mac; nil when none is asked for (the VF keeps its own).
	EffectiveMAC net.HardwareAddr `json:"-"`
	// VF is the admin config derived from the fields above, validated.
	VF vfmanager.VFConfig `json:"-"`
}

// HasAdminSettings reports whether the netconf asks the PF to change anything on the VF.
func (c *NetConf) HasAdminSettings() bool {
	v := c.VF
	return v.MAC != nil || v.VLAN != nil || v.QoS != nil || v.VLANProto != "" || v.SpoofChk != nil ||
		v.Trust != nil || v.LinkState != "" || v.MinTxRate != nil || v.MaxTxRate != nil
}

// NeedsPF reports whether the netconf's settings can only be made through the PF. A MAC alone
// is not one in netdev mode: the netdev takes it directly, and pinning it on the PF as well is
// done only where the PF reports the VF.
func (c *NetConf) NeedsPF(dpdk bool) bool {
	v := c.VF
	if dpdk {
		return c.HasAdminSettings()
	}
	v.MAC = nil
	return (&NetConf{VF: v}).HasAdminSettings()
}

// LoadConf parses and validates a netconf and the CNI_ARGS string, before anything on the host
// is touched. Errors name the field and the device.
func LoadConf(stdin []byte, cniArgs string) (*NetConf, error) {
	c := &NetConf{}
	if err := json.Unmarshal(stdin, c); err != nil {
		return nil, fmt.Errorf("sriov: parse netconf: %w", err)
	}
	if c.CNIVersion != "" && !slices.Contains(version.All.SupportedVersions(), c.CNIVersion) {
		return nil, fmt.Errorf("sriov: netconf %q: cniVersion %q not supported (want one of %s)", c.Name, c.CNIVersion, strings.Join(version.All.SupportedVersions(), ", "))
	}
	if err := version.ParsePrevResult(&c.NetConf); err != nil {
		return nil, fmt.Errorf("sriov: netconf %q: prevResult: %w", c.Name, err)
	}
	if c.DeviceID == "" {
		return nil, fmt.Errorf("sriov: netconf %q: field \"deviceID\" is missing (the VF PCI address, normally set by the meta-plugin from the device plugin's allocation)", c.Name)
	}
	c.DeviceID = NormalizeAddress(c.DeviceID)
	if !pci.ValidAddress(c.DeviceID) {
		return nil, fmt.Errorf("sriov: netconf %q: field \"deviceID\" %q is not a PCI address (want 0000:00:00.0)", c.Name, c.DeviceID)
	}
	dev := c.DeviceID
	bad := func(field string, format string, a ...any) error {
		return fmt.Errorf("sriov: vf %s: field %q: %s", dev, field, fmt.Sprintf(format, a...))
	}

	v := &c.VF
	if c.VLAN != nil {
		if *c.VLAN < 0 || *c.VLAN > 4094 {
			return nil, bad("vlan", "%d out of range 0-4094", *c.VLAN)
		}
		v.VLAN = c.VLAN
	}
	if c.VLANQoS != nil {
		if *c.VLANQoS < 0 || *c.VLANQoS > 7 {
			return nil, bad("vlanQoS", "%d out of range 0-7", *c.VLANQoS)
		}
		if *c.VLANQoS != 0 && (c.VLAN == nil || *c.VLAN == 0) {
			return nil, bad("vlanQoS", "%d needs a non-zero \"vlan\"", *c.VLANQoS)
		}
		v.QoS = c.VLANQoS
	}
	if c.VLANProto != nil {
		p := strings.ToLower(*c.VLANProto)
		if _, err := vfmanager.VLANProtoNumber(p); err != nil {
			return nil, bad("vlanProto", "%q: want 802.1q or 802.1ad", *c.VLANProto)
		}
		if p == "802.1ad" && (c.VLAN == nil || *c.VLAN == 0) {
			return nil, bad("vlanProto", "802.1ad needs a non-zero \"vlan\"")
		}
		// 802.1q is the kernel's default: only pass the proto along with a VLAN.
		if c.VLAN != nil && *c.VLAN != 0 {
			v.VLANProto = p
		}
	}
	var err error
	if v.SpoofChk, err = onOff(c.SpoofChk); err != nil {
		return nil, bad("spoofchk", "%v", err)
	}
	if v.Trust, err = onOff(c.Trust); err != nil {
		return nil, bad("trust", "%v", err)
	}
	switch c.LinkState {
	case "", "auto", "enable", "disable":
		v.LinkState = c.LinkState
	default:
		return nil, bad("link_state", "%q: want auto, enable or disable", c.LinkState)
	}
	if c.MinTxRate != nil {
		if *c.MinTxRate < 0 {
			return nil, bad("min_tx_rate", "%d Mbps is negative", *c.MinTxRate)
		}
		v.MinTxRate = c.MinTxRate
	}
	if c.MaxTxRate != nil {
		if *c.MaxTxRate < 0 {
			return nil, bad("max_tx_rate", "%d Mbps is negative", *c.MaxTxRate)
		}
		v.MaxTxRate = c.MaxTxRate
	}
	if c.MinTxRate != nil && c.MaxTxRate != nil && *c.MaxTxRate != 0 && *c.MinTxRate > *c.MaxTxRate {
		return nil, bad("min_tx_rate", "%d Mbps above max_tx_rate %d Mbps", *c.MinTxRate, *c.MaxTxRate)
	}

	// MAC precedence as upstream: runtimeConfig (the "mac" capability) over CNI_ARGS over netconf.
	macSrc, macField := c.MAC, "mac"
	if a := cniArg(cniArgs, "MAC"); a != "" {
		macSrc, macField = a, "CNI_ARGS MAC"
	}
	if c.RuntimeConfig.MAC != "" {
		macSrc, macField = c.RuntimeConfig.MAC, "runtimeConfig.mac"
	}
	if macSrc != "" {
		mac, err := net.ParseMAC(macSrc)
		if err != nil || len(mac) != 6 {
			return nil, bad(macField, "%q is not an Ethernet MAC address", macSrc)
		}
		if mac[0]&1 == 1 {
			return nil, bad(macField, "%s is a multicast address", mac)
		}
		c.EffectiveMAC = mac
		v.MAC = mac
	}
	for _, ip := range c.RuntimeConfig.IPs {
		if _, _, err := net.ParseCIDR(ip); err != nil && net.ParseIP(ip) == nil {
			return nil, bad("runtimeConfig.ips", "%q is not an IP address", ip)
		}
	}
	switch strings.ToLower(c.LogLevel) {
	case "", "debug", "info", "warning", "warn", "error", "panic":
	default:
		return nil, bad("logLevel", "%q: want debug, info, warning or error", c.LogLevel)
	}
	if err := v.Validate(); err != nil {
		return nil, fmt.Errorf("sriov: vf %s: %w", dev, err)
	}
	return c, nil
}

// NormalizeAddress accepts a PCI address without its domain ("00:12.0") as upstream does.
func NormalizeAddress(a string) string {
	a = strings.ToLower(strings.TrimSpace(a))
	if strings.Count(a, ":") == 1 {
		a = "0000:" + a
	}
	return a
}

func onOff(s string) (*bool, error) {
	switch s {
	case "":
		return nil, nil
	case "on":
		t := true
		return &t, nil
	case "off":
		f := false
		return &f, nil
	}
	return nil, fmt.Errorf("%q: want \"on\" or \"off\"", s)
}

// cniArg returns one key of a CNI_ARGS string (see package cniargs).
func cniArg(args, key string) string { return cniargs.Get(args, key) }
