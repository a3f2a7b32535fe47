// Package vfmanager manages SR-IOV VFs: their number on a PF, the driver they are bound to, and
// the admin settings the PF applies to them (MAC, VLAN, QoS, spoof check, trust, link state,
// rate), with a saved state to restore when a VF is released.
package vfmanager

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/multinet-io/multinet/pci"
)

// VFConfig holds the admin settings to apply to a VF through its PF. A nil or empty field
// means "leave as is".
type VFConfig struct {
	MAC       net.HardwareAddr
	VLAN      *int
	QoS       *int
	VLANProto string // "802.1q" (default) or "802.1ad"
	SpoofChk  *bool
	Trust     *bool
	LinkState string // "auto", "enable" or "disable"
	MinTxRate *int   // Mbps
	MaxTxRate *int   // Mbps
}

// VFState is a VF's admin settings as the PF reports them. It is saved before a VF is handed
// out and restored on release.
type VFState struct {
	MAC       string `json:"mac"`
	VLAN      int    `json:"vlan"`
	QoS       int    `json:"qos"`
	VLANProto string `json:"vlanProto"`
	SpoofChk  bool   `json:"spoofchk"`
	Trust     bool   `json:"trust"`
	LinkState string `json:"linkState"`
	MinTxRate int    `json:"minTxRate"`
	MaxTxRate int    `json:"maxTxRate"`
}

// Manager changes VFs on one host: sysfs for counts and drivers, netlink for admin settings.
type Manager struct {
	Sys *pci.SysFS
	// NL is the netlink handle of the namespace holding the PF netdevs; nil means a handle
	// opened on first use in the caller's current namespace.
	NL *netlink.Handle

	nlOnce sync.Once
	nlErr  error
}

// New returns a Manager over the sysfs root, working in the current network namespace.
func New(sys *pci.SysFS) *Manager { return &Manager{Sys: sys} }

// nl returns the handle. The package-level netlink calls (a zero Handle) do not ask the
// kernel for the VF list (IFLA_EXT_MASK RTEXT_FILTER_VF); a handle from NewHandle does.
func (m *Manager) nl() *netlink.Handle {
	m.nlOnce.Do(func() {
		if m.NL == nil {
			m.NL, m.nlErr = netlink.NewHandle(unix.NETLINK_ROUTE)
		}
	})
	if m.NL == nil {
		// No socket could be opened; the zero handle still sets VF settings and reports
		// the socket error on reads through vfInfo.
		return &netlink.Handle{}
	}
	return m.NL
}

const (
	ethP8021Q  = 0x8100
	ethP8021AD = 0x88a8
)

var linkStates = map[string]uint32{
	"auto":    netlink.VF_LINK_STATE_AUTO,
	"enable":  netlink.VF_LINK_STATE_ENABLE,
	"disable": netlink.VF_LINK_STATE_DISABLE,
}

func linkStateName(v uint32) string {
	for n, s := range linkStates {
		if s == v {
			return n
		}
	}
	return fmt.Sprintf("unknown(%d)", v)
}

// VLANProtoNumber maps "802.1q"/"802.1ad" (any case) to the ethertype the kernel takes.
func VLANProtoNumber(p string) (int, error) {
	switch p {
	case "", "802.1q", "802.1Q":
		return ethP8021Q, nil
	case "802.1ad", "802.1AD":
		return ethP8021AD, nil
	}
	return 0, fmt.Errorf("vlan protocol %q: want 802.1q or 802.1ad", p)
}

// Validate checks a config without touching the host.
func (c VFConfig) Validate() error {
	if c.VLAN != nil && (*c.VLAN < 0 || *c.VLAN > 4094) {
		return fmt.Errorf("vlan %d: out of range 0-4094", *c.VLAN)
	}
	if c.QoS != nil && (*c.QoS < 0 || *c.QoS > 7) {
		return fmt.Errorf("vlan qos %d: out of range 0-7", *c.QoS)
	}
	if c.QoS != nil && *c.QoS != 0 && (c.VLAN == nil || *c.VLAN == 0) {
		return fmt.Errorf("vlan qos %d needs a non-zero vlan", *c.QoS)
	}
	if _, err := VLANProtoNumber(c.VLANProto); err != nil {
		return err
	}
	if c.VLANProto != "" && (c.VLAN == nil || *c.VLAN == 0) {
		return fmt.Errorf("vlan protocol %s needs a non-zero vlan", c.VLANProto)
	}
	if _, ok := linkStates[c.LinkState]; c.LinkState != "" && !ok {
		return fmt.Errorf("link state %q: want auto, enable or disable", c.LinkState)
	}
	if c.MinTxRate != nil && *c.MinTxRate < 0 {
		return fmt.Errorf("min_tx_rate %d: negative", *c.MinTxRate)
	}
	if c.MaxTxRate != nil && *c.MaxTxRate < 0 {
		return fmt.Errorf("max_tx_rate %d: negative", *c.MaxTxRate)
	}
	if c.MinTxRate != nil && c.MaxTxRate != nil && *c.MaxTxRate != 0 && *c.MinTxRate > *c.MaxTxRate {
		return fmt.Errorf("min_tx_rate %d above max_tx_rate %d", *c.MinTxRate, *c.MaxTxRate)
	}
	if c.MAC != nil && len(c.MAC) != 6 {
		return fmt.Errorf("mac %s: not an Ethernet address", c.MAC)
	}
	return nil
}

// vfInfo reads one VF's entry from the PF's VF list.
func (m *Manager) vfInfo(pfNetdev string, vf int) (netlink.Link, netlink.VfInfo, error) {
	h := m.nl()
	if m.nlErr != nil {
		return nil, netlink.VfInfo{}, fmt.Errorf("pf %s: open netlink: %w", pfNetdev, m.nlErr)
	}
	link, err := h.LinkByName(pfNetdev)
	if err != nil {
		return nil, netlink.VfInfo{}, fmt.Errorf("pf %s: %w", pfNetdev, err)
	}
	for _, v := range link.Attrs().Vfs {
		if v.ID == vf {
			return link, v, nil
		}
	}
	return nil, netlink.VfInfo{}, fmt.Errorf("pf %s: has no vf %d (it reports %d VFs): %w", pfNetdev, vf, len(link.Attrs().Vfs), ErrVFNotReported)
}

// ErrVFNotReported is returned (wrapped) when the PF's netlink VF list has no entry for the VF:
// the netdev is not an SR-IOV PF driver (a veth on a simulated node) or the VF is gone.
var ErrVFNotReported = errors.New("vf not in the PF's netlink VF list")

// Mismatches lists the settings of c that st does not have, as "setting: want X, have Y";
// empty when the VF carries every setting the config asks for.
func (c VFConfig) Mismatches(st VFState) []string {
	var out []string
	add := func(setting string, want, have any) {
		out = append(out, fmt.Sprintf("%s: want %v, have %v", setting, want, have))
	}
	if c.MAC != nil && !strings.EqualFold(c.MAC.String(), st.MAC) {
		add("mac", c.MAC, st.MAC)
	}
	if c.VLAN != nil && *c.VLAN != st.VLAN {
		add("vlan", *c.VLAN, st.VLAN)
	}
	if c.QoS != nil && *c.QoS != st.QoS {
		add("vlan qos", *c.QoS, st.QoS)
	}
	if c.VLANProto != "" && c.VLAN != nil && *c.VLAN != 0 && !strings.EqualFold(c.VLANProto, st.VLANProto) {
		add("vlan proto", c.VLANProto, st.VLANProto)
	}
	if c.SpoofChk != nil && *c.SpoofChk != st.SpoofChk {
		add("spoofchk", onOff(*c.SpoofChk), onOff(st.SpoofChk))
	}
	if c.Trust != nil && *c.Trust != st.Trust {
		add("trust", onOff(*c.Trust), onOff(st.Trust))
	}
	if c.LinkState != "" && c.LinkState != st.LinkState {
		add("link state", c.LinkState, st.LinkState)
	}
	if c.MinTxRate != nil && *c.MinTxRate != st.MinTxRate {
		add("min_tx_rate", *c.MinTxRate, st.MinTxRate)
	}
	if c.MaxTxRate != nil && *c.MaxTxRate != st.MaxTxRate {
		add("max_tx_rate", *c.MaxTxRate, st.MaxTxRate)
	}
	return out
}

// ReadVF returns the VF's admin settings as the PF reports them.
func (m *Manager) ReadVF(pfNetdev string, vf int) (VFState, error) {
	_, v, err := m.vfInfo(pfNetdev, vf)
	if err != nil {
		return VFState{}, err
	}
	proto := "802.1q"
	if v.VlanProto == ethP8021AD {
		proto = "802.1ad"
	}
	return VFState{
		MAC: v.Mac.String(), VLAN: v.Vlan, QoS: v.Qos, VLANProto: proto,
		SpoofChk: v.Spoofchk, Trust: v.Trust != 0, LinkState: linkStateName(v.LinkState),
		MinTxRate: int(v.MinTxRate), MaxTxRate: int(v.MaxTxRate),
	}, nil
}

// settingError names the PF, VF, setting and the kernel's answer, which is what an operator
// needs to tell a driver's refusal (igb: link state is EOPNOTSUPP) from a mistake.
func settingError(pf string, vf int, setting string, err error) error {
	hint := ""
	switch {
	case errors.Is(err, errEOPNOTSUPP):
		hint = " (the PF driver does not support this setting)"
	case errors.Is(err, errEINVAL):
		hint = " (the PF driver rejected the value)"
	}
	return fmt.Errorf("pf %s vf %d: set %s: %w%s", pf, vf, setting, err, hint)
}

// ApplyVF applies the config through the PF in a fixed order and stops at the first failure.
// It does not undo earlier settings: callers save ReadVF first and RestoreVF on failure.
func (m *Manager) ApplyVF(pfNetdev string, vf int, c VFConfig) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("pf %s vf %d: %w", pfNetdev, vf, err)
	}
	link, cur, err := m.vfInfo(pfNetdev, vf)
	if err != nil {
		return err
	}
	h := m.nl()
	if c.VLAN != nil {
		qos := 0
		if c.QoS != nil {
			qos = *c.QoS
		}
		proto, _ := VLANProtoNumber(c.VLANProto)
		if err := h.LinkSetVfVlanQosProto(link, vf, *c.VLAN, qos, proto); err != nil {
			return settingError(pfNetdev, vf, fmt.Sprintf("vlan %d qos %d proto %s", *c.VLAN, qos, orDefault(c.VLANProto, "802.1q")), err)
		}
	}
	if c.MAC != nil {
		if err := h.LinkSetVfHardwareAddr(link, vf, c.MAC); err != nil {
			return settingError(pfNetdev, vf, "mac "+c.MAC.String(), err)
		}
	}
	if c.MinTxRate != nil || c.MaxTxRate != nil {
		minR, maxR := int(cur.MinTxRate), int(cur.MaxTxRate)
		if c.MinTxRate != nil {
			minR = *c.MinTxRate
		}
		if c.MaxTxRate != nil {
			maxR = *c.MaxTxRate
		}
		if err := h.LinkSetVfRate(link, vf, minR, maxR); err != nil {
			return settingError(pfNetdev, vf, fmt.Sprintf("tx rate min %d max %d Mbps", minR, maxR), err)
		}
	}
	if c.SpoofChk != nil {
		if err := h.LinkSetVfSpoofchk(link, vf, *c.SpoofChk); err != nil {
			return settingError(pfNetdev, vf, "spoofchk "+onOff(*c.SpoofChk), err)
		}
	}
	if c.Trust != nil {
		if err := h.LinkSetVfTrust(link, vf, *c.Trust); err != nil {
			return settingError(pfNetdev, vf, "trust "+onOff(*c.Trust), err)
		}
	}
	if c.LinkState != "" {
		if err := h.LinkSetVfState(link, vf, linkStates[c.LinkState]); err != nil {
			return settingError(pfNetdev, vf, "link state "+c.LinkState, err)
		}
	}
	return nil
}

// RestoreVF puts back a saved state. It tries every setting, only those that differ from
// what the PF reports now (so a driver that refuses a setting never changed is not an error),
// and returns all failures joined. Trust goes back first: some drivers refuse MAC changes to an
// untrusted VF.
func (m *Manager) RestoreVF(pfNetdev string, vf int, st VFState) error {
	link, cur, err := m.vfInfo(pfNetdev, vf)
	if err != nil {
		return err
	}
	h := m.nl()
	var errs []error
	if (cur.Trust != 0) != st.Trust {
		if err := h.LinkSetVfTrust(link, vf, st.Trust); err != nil {
			errs = append(errs, settingError(pfNetdev, vf, "trust "+onOff(st.Trust), err))
		}
	}
	proto, perr := VLANProtoNumber(st.VLANProto)
	if perr != nil {
		proto = ethP8021Q
	}
	if cur.Vlan != st.VLAN || cur.Qos != st.QoS || (st.VLAN != 0 && cur.VlanProto != proto) {
		if err := h.LinkSetVfVlanQosProto(link, vf, st.VLAN, st.QoS, proto); err != nil {
			errs = append(errs, settingError(pfNetdev, vf, fmt.Sprintf("vlan %d qos %d", st.VLAN, st.QoS), err))
		}
	}
	if mac, err := net.ParseMAC(st.MAC); err == nil && cur.Mac.String() != mac.String() {
		if err := h.LinkSetVfHardwareAddr(link, vf, mac); err != nil {
			errs = append(errs, settingError(pfNetdev, vf, "mac "+st.MAC, err))
		}
	}
	if int(cur.MinTxRate) != st.MinTxRate || int(cur.MaxTxRate) != st.MaxTxRate {
		if err := h.LinkSetVfRate(link, vf, st.MinTxRate, st.MaxTxRate); err != nil {
			errs = append(errs, settingError(pfNetdev, vf, fmt.Sprintf("tx rate min %d max %d Mbps", st.MinTxRate, st.MaxTxRate), err))
		}
	}
	if cur.Spoofchk != st.SpoofChk {
		if err := h.LinkSetVfSpoofchk(link, vf, st.SpoofChk); err != nil {
			errs = append(errs, settingError(pfNetdev, vf, "spoofchk "+onOff(st.SpoofChk), err))
		}
	}
	if s, ok := linkStates[st.LinkState]; ok && cur.LinkState != s {
		if err := h.LinkSetVfState(link, vf, s); err != nil {
			errs = append(errs, settingError(pfNetdev, vf, "link state "+st.LinkState, err))
		}
	}
	return errors.Join(errs...)
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
