// Package deviceplugin advertises SR-IOV VFs, other PCI network devices and vhost-user socket
// slots to kubelet as extended resources (device plugin API v1beta1). It reads the upstream
// SR-IOV network device plugin's config.json unchanged and adds what upstream lacks: live
// rediscovery, health, preferred allocation, config reload and vhost-user pools.
//
// The pieces are separate: config.go parses and validates, discover.go turns sysfs into pools,
// plugin.go is one pool's gRPC endpoint, manager.go ties them to kubelet and the config file.
package deviceplugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/multinet-io/multinet/pci"
)

// Device types a pool can have.
const (
	TypeNetDevice    = "netDevice"
	TypeAccelerator  = "accelerator"
	TypeAuxNetDevice = "auxNetDevice" // auxiliary-bus devices (subfunctions) of network PCI functions
	TypeVhostUser    = "vhostUser"
)

// DefaultPrefix is the resource prefix upstream uses when a pool names none.
const DefaultPrefix = "intel.com"

// Vhost-user socket modes (device-info spec): client = the host side creates the socket and the
// container attaches; server = the container creates it.
const (
	VhostClient = "client"
	VhostServer = "server"
)

// Config is the whole config.json.
type Config struct {
	ResourceList []Pool `json:"resourceList"`
	// Warnings lists fields Parse ignored (upstream ignores unknown fields; so do we, loudly).
	Warnings []string `json:"-"`
	// Refused lists the pools Parse left out of ResourceList, each with its reason. One pool
	// this node cannot serve must not take the others down with it (upstream, too, drops only
	// the resource it cannot use).
	Refused []Refusal `json:"-"`
}

// Refusal is a pool of the config file that is not served, and why.
type Refusal struct {
	Index    int    // position in the file's resourceList
	Name     string // resourceName as written
	Resource string // <prefix>/<name>, the prefix defaulted as for a served pool
	Reason   string
}

func (r Refusal) String() string {
	return fmt.Sprintf("resourceList[%d] %q: %s", r.Index, r.Name, r.Reason)
}

// Pool is one resource: its devices all go under one name like intel.com/sriov_netdevice.
type Pool struct {
	ResourceName    string `json:"resourceName"`
	ResourcePrefix  string `json:"resourcePrefix,omitempty"`
	DeviceType      string `json:"deviceType,omitempty"`
	ExcludeTopology bool   `json:"excludeTopology,omitempty"`
	// Selectors: a device joins the pool when it matches every field given in one of them.
	Selectors Selectors `json:"selectors,omitempty"`
	// VhostUser configures a vhostUser pool (ours; upstream has no such type).
	VhostUser *VhostUser `json:"vhostUser,omitempty"`
	// AdditionalInfo is accepted for compatibility (upstream adds it to the _INFO env).
	AdditionalInfo map[string]map[string]string `json:"additionalInfo,omitempty"`
}

// VhostUser describes Count socket slots, each a directory <Dir>/<resourceName>-<i> on the host
// that is mounted into the container at <ContainerDir>/<resourceName>-<i>.
type VhostUser struct {
	Dir          string `json:"dir"`
	Count        int    `json:"count"`
	Mode         string `json:"mode,omitempty"`         // client (default) or server
	ContainerDir string `json:"containerDir,omitempty"` // default: Dir
	SocketName   string `json:"socketName,omitempty"`   // default: sock
}

// Selector holds the upstream selector fields; empty fields match everything.
type Selector struct {
	Vendors      []string `json:"vendors,omitempty"`
	Devices      []string `json:"devices,omitempty"`
	Drivers      []string `json:"drivers,omitempty"`
	PCIAddresses []string `json:"pciAddresses,omitempty"`
	PFNames      []string `json:"pfNames,omitempty"`
	RootDevices  []string `json:"rootDevices,omitempty"`
	LinkTypes    []string `json:"linkTypes,omitempty"`
	ACPIIndexes  []string `json:"acpiIndexes,omitempty"`
	// PKeys takes an InfiniBand function whose port 1 has one of these partition keys at
	// index 0 (hex, "0x8001"; compared as numbers).
	PKeys        []string `json:"pKeys,omitempty"`
	IsRdma       bool     `json:"isRdma,omitempty"`
	NeedVhostNet bool     `json:"needVhostNet,omitempty"`
	// VdpaType takes a VF only with a vDPA device bound to that type's driver: "vhost"
	// (vhost_vdpa, a /dev/vhost-vdpa-N for the pod) or "virtio" (virtio_vdpa, a kernel netdev).
	VdpaType string `json:"vdpaType,omitempty"`
	// AuxTypes (auxNetDevice pools) names the auxiliary device types taken; upstream serves
	// only "sf" (subfunctions), and so do we.
	AuxTypes []string `json:"auxTypes,omitempty"`
	// DDPProfiles is upstream's; we accept it but cannot evaluate it from sysfs (the loaded
	// DDP package is read with the NIC vendor's tool), so a non-empty value refuses the pool
	// rather than have it silently match more than its author meant.
	DDPProfiles []string `json:"ddpProfiles,omitempty"`

	pfNames     []vfRange
	rootDevices []vfRange
	pkeys       []uint16
}

// Selectors is one selector object or a list of them (upstream accepts both).
type Selectors []Selector

// UnmarshalJSON takes `{...}` or `[{...},...]`.
func (s *Selectors) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '{' {
		var one Selector
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		*s = Selectors{one}
		return nil
	}
	var many []Selector
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*s = many
	return nil
}

// vfRange is a parsed "name#0-3,5" entry: a PF (by netdev name or PCI address) and the VF
// indexes it allows (nil: all of them).
type vfRange struct {
	pf      string
	indexes map[int]bool
}

func (r vfRange) allows(index int) bool { return r.indexes == nil || r.indexes[index] }

var (
	resourceNameRe = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)
	// A DNS subdomain, as kubelet wants for the prefix of an extended resource.
	prefixRe = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	hexIDRe  = regexp.MustCompile(`^[0-9a-fA-F]{4}$`)
)

// maxVFIndex bounds ranges so a typo like 0-99999999 cannot allocate a huge set.
const maxVFIndex = 4095

// maxVhostSlots bounds a vhostUser pool's count for the same reason.
const maxVhostSlots = 1024

// Parse decodes and validates config.json. A file that is not a JSON object with a
// resourceList is an error; a pool that is invalid or that this node cannot serve is left out
// and listed in Refused, naming the pool (by index and name) and the field.
func Parse(data []byte) (*Config, error) {
	var raw struct {
		ResourceList []json.RawMessage `json:"resourceList"`
	}
	if err := decodeOne(data, &raw); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if raw.ResourceList == nil {
		return nil, errors.New("config: no resourceList")
	}
	c := &Config{ResourceList: []Pool{}, Warnings: unknownFields(data)}
	seen := map[string]int{}
	for i, rp := range raw.ResourceList {
		var p Pool
		refuse := func(err error) {
			prefix := p.ResourcePrefix
			if prefix == "" {
				prefix = DefaultPrefix
			}
			c.Refused = append(c.Refused, Refusal{Index: i, Name: p.ResourceName, Resource: prefix + "/" + p.ResourceName, Reason: err.Error()})
		}
		if err := json.Unmarshal(rp, &p); err != nil {
			_ = json.Unmarshal(rp, &struct {
				Name *string `json:"resourceName"`
			}{&p.ResourceName})
			refuse(err)
			continue
		}
		if err := p.validate(); err != nil {
			refuse(err)
			continue
		}
		if j, dup := seen[p.FullName()]; dup {
			refuse(fmt.Errorf("resource %s already defined by resourceList[%d]", p.FullName(), j))
			continue
		}
		seen[p.FullName()] = i
		c.ResourceList = append(c.ResourceList, p)
	}
	return c, nil
}

// Err is nil when every pool of the file is served, else an error listing the refused ones.
func (c *Config) Err() error {
	if len(c.Refused) == 0 {
		return nil
	}
	msgs := make([]string, len(c.Refused))
	for i, r := range c.Refused {
		msgs[i] = r.String()
	}
	return fmt.Errorf("config: %s", strings.Join(msgs, "; "))
}

// decodeOne decodes exactly one JSON value (no trailing data).
func decodeOne(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// unknownFields names every key of a pool or selector object that Parse does not know, so that
// a typo ("vendor" for "vendors") is visible although, as upstream, it is not an error.
func unknownFields(data []byte) []string {
	var raw struct {
		ResourceList []map[string]json.RawMessage `json:"resourceList"`
	}
	if json.Unmarshal(data, &raw) != nil {
		return nil
	}
	var out []string
	for i, p := range raw.ResourceList {
		var name string
		_ = json.Unmarshal(p["resourceName"], &name)
		where := fmt.Sprintf("resourceList[%d] %q", i, name)
		out = append(out, unknownKeys(p, poolFields, where)...)
		var sels []map[string]json.RawMessage
		if sel := bytes.TrimSpace(p["selectors"]); len(sel) > 0 && sel[0] == '{' {
			var one map[string]json.RawMessage
			_ = json.Unmarshal(sel, &one)
			sels = append(sels, one)
		} else {
			_ = json.Unmarshal(sel, &sels)
		}
		for j, s := range sels {
			out = append(out, unknownKeys(s, selectorFields, fmt.Sprintf("%s: selectors[%d]", where, j))...)
		}
		var vu map[string]json.RawMessage
		if json.Unmarshal(p["vhostUser"], &vu) == nil {
			out = append(out, unknownKeys(vu, vhostFields, where+": vhostUser")...)
		}
	}
	return out
}

var (
	poolFields     = jsonFields(Pool{})
	selectorFields = jsonFields(Selector{})
	vhostFields    = jsonFields(VhostUser{})
)

func jsonFields(v any) map[string]bool {
	m := map[string]bool{}
	t := reflect.TypeOf(v)
	for i := 0; i < t.NumField(); i++ {
		if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); tag != "" && tag != "-" {
			m[tag] = true
		}
	}
	return m
}

func unknownKeys(obj map[string]json.RawMessage, known map[string]bool, where string) []string {
	var out []string
	for k := range obj {
		if !known[k] {
			out = append(out, fmt.Sprintf("%s: unknown field %q ignored", where, k))
		}
	}
	sort.Strings(out)
	return out
}

// FullName is the resource name kubelet knows: <prefix>/<name>.
func (p *Pool) FullName() string { return p.ResourcePrefix + "/" + p.ResourceName }

// SocketName is the pool's endpoint file in the device-plugin directory.
func (p *Pool) SocketName() string { return p.ResourcePrefix + "_" + p.ResourceName + ".sock" }

// EnvName is the Allocate env var upstream defines: PCIDEVICE_<PREFIX>_<NAME> upper-cased with
// "." replaced by "_".
func (p *Pool) EnvName() string {
	kind := "PCIDEVICE_"
	if p.DeviceType == TypeVhostUser {
		kind = "VHOSTUSER_"
	}
	return strings.ReplaceAll(strings.ToUpper(kind+p.ResourcePrefix+"_"+p.ResourceName), ".", "_")
}

func (p *Pool) validate() error {
	if p.ResourceName == "" {
		return errors.New("resourceName: missing")
	}
	if !resourceNameRe.MatchString(p.ResourceName) {
		return fmt.Errorf("resourceName %q: only letters, digits, '_' and '-' are allowed", p.ResourceName)
	}
	if p.ResourcePrefix == "" {
		p.ResourcePrefix = DefaultPrefix
	}
	if len(p.ResourcePrefix) > 253 || !prefixRe.MatchString(p.ResourcePrefix) {
		return fmt.Errorf("resourcePrefix %q: not a DNS subdomain", p.ResourcePrefix)
	}
	if len(p.ResourceName) > 63 {
		return fmt.Errorf("resourceName %q: longer than 63 characters", p.ResourceName)
	}
	if p.DeviceType == "" {
		p.DeviceType = TypeNetDevice
	}
	switch p.DeviceType {
	case TypeNetDevice, TypeAccelerator, TypeAuxNetDevice:
		if p.VhostUser != nil {
			return fmt.Errorf("vhostUser: only for deviceType %q, not %q", TypeVhostUser, p.DeviceType)
		}
		if len(p.Selectors) == 0 {
			// Upstream panics on a missing or null selectors and skips an empty list: either
			// way the pool could never hold a device.
			return errors.New("selectors: missing or empty (want at least one selector object; {} takes every device)")
		}
		for i := range p.Selectors {
			if err := p.Selectors[i].validate(p.DeviceType); err != nil {
				return fmt.Errorf("selectors[%d].%w", i, err)
			}
		}
	case TypeVhostUser:
		if len(p.Selectors) > 0 {
			return errors.New("selectors: a vhostUser pool has no PCI devices to select")
		}
		if p.VhostUser == nil {
			return errors.New("vhostUser: missing (want {\"dir\": ..., \"count\": N})")
		}
		return p.VhostUser.validate(p.ResourceName)
	default:
		return fmt.Errorf("deviceType %q: want %s, %s, %s or %s", p.DeviceType, TypeNetDevice, TypeAccelerator, TypeAuxNetDevice, TypeVhostUser)
	}
	return nil
}

func (v *VhostUser) validate(name string) error {
	if v.Dir == "" || !filepath.IsAbs(v.Dir) {
		return fmt.Errorf("vhostUser.dir %q: want an absolute host directory", v.Dir)
	}
	v.Dir = filepath.Clean(v.Dir)
	if v.Count < 1 || v.Count > maxVhostSlots {
		return fmt.Errorf("vhostUser.count %d: want 1-%d", v.Count, maxVhostSlots)
	}
	if v.Mode == "" {
		v.Mode = VhostClient
	}
	if v.Mode != VhostClient && v.Mode != VhostServer {
		return fmt.Errorf("vhostUser.mode %q: want %q or %q", v.Mode, VhostClient, VhostServer)
	}
	if v.ContainerDir == "" {
		v.ContainerDir = v.Dir
	}
	if !filepath.IsAbs(v.ContainerDir) {
		return fmt.Errorf("vhostUser.containerDir %q: want an absolute path", v.ContainerDir)
	}
	v.ContainerDir = filepath.Clean(v.ContainerDir)
	if v.SocketName == "" {
		v.SocketName = "sock"
	}
	if strings.Contains(v.SocketName, "/") || v.SocketName == "." || v.SocketName == ".." {
		return fmt.Errorf("vhostUser.socketName %q: want a file name", v.SocketName)
	}
	// Unix socket paths are limited to 108 bytes including the NUL; check the longest slot.
	longest := filepath.Join(v.Dir, fmt.Sprintf("%s-%d", name, v.Count-1), v.SocketName)
	if cl := filepath.Join(v.ContainerDir, fmt.Sprintf("%s-%d", name, v.Count-1), v.SocketName); len(cl) > len(longest) {
		longest = cl
	}
	if len(longest) > 107 {
		return fmt.Errorf("vhostUser.dir %q: socket path %s is %d bytes, over the 107 a unix socket allows", v.Dir, longest, len(longest))
	}
	return nil
}

func (s *Selector) validate(deviceType string) error {
	for _, v := range s.Vendors {
		if !hexIDRe.MatchString(v) {
			return fmt.Errorf("vendors: %q is not a 4-digit hex vendor id", v)
		}
	}
	for _, d := range s.Devices {
		if !hexIDRe.MatchString(d) {
			return fmt.Errorf("devices: %q is not a 4-digit hex device id", d)
		}
	}
	for _, d := range s.Drivers {
		if d == "" || strings.ContainsAny(d, "/ ") {
			return fmt.Errorf("drivers: %q is not a driver name", d)
		}
	}
	for _, a := range s.PCIAddresses {
		if !pci.ValidAddress(a) {
			return fmt.Errorf("pciAddresses: %q is not a PCI address (want 0000:00:00.0)", a)
		}
	}
	for _, a := range s.ACPIIndexes {
		if _, err := strconv.ParseUint(a, 10, 32); err != nil {
			return fmt.Errorf("acpiIndexes: %q is not a number", a)
		}
	}
	s.pkeys = s.pkeys[:0]
	for _, k := range s.PKeys {
		n, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(k), "0x"), 16, 16)
		if err != nil || !strings.HasPrefix(strings.ToLower(k), "0x") {
			return fmt.Errorf("pKeys: %q is not a 16-bit hex partition key (want 0x8001)", k)
		}
		s.pkeys = append(s.pkeys, uint16(n))
	}
	for _, l := range s.LinkTypes {
		if l == "" {
			return errors.New("linkTypes: empty link type")
		}
	}
	if len(s.DDPProfiles) > 0 {
		return errors.New("ddpProfiles: not supported (needs the NIC vendor's tool, not sysfs)")
	}
	switch {
	case s.VdpaType == "":
	case deviceType != TypeNetDevice:
		return fmt.Errorf("vdpaType: only for deviceType %q", TypeNetDevice)
	case s.VdpaType != pci.VdpaTypeVhost && s.VdpaType != pci.VdpaTypeVirtio:
		return fmt.Errorf("vdpaType %q: want %q or %q", s.VdpaType, pci.VdpaTypeVhost, pci.VdpaTypeVirtio)
	case s.IsRdma:
		// As upstream: a vDPA device and the VF's RDMA device are different ways to use it.
		return errors.New("vdpaType: not with isRdma in the same selector")
	}
	if deviceType == TypeAuxNetDevice {
		if len(s.AuxTypes) == 0 {
			return errors.New("auxTypes: missing (want [\"sf\"])")
		}
		for _, t := range s.AuxTypes {
			if t != "sf" {
				return fmt.Errorf("auxTypes: %q: only \"sf\" (subfunctions) can be handed to a pod", t)
			}
		}
		if s.NeedVhostNet {
			return errors.New("needVhostNet: not for auxiliary devices")
		}
	} else if len(s.AuxTypes) > 0 {
		return fmt.Errorf("auxTypes: only for deviceType %q", TypeAuxNetDevice)
	}
	s.pfNames = s.pfNames[:0]
	for _, e := range s.PFNames {
		r, err := parseVFRange(e)
		if err != nil {
			return fmt.Errorf("pfNames: %w", err)
		}
		r.pf = strings.ToLower(r.pf)
		s.pfNames = append(s.pfNames, r)
	}
	s.rootDevices = s.rootDevices[:0]
	for _, e := range s.RootDevices {
		r, err := parseVFRange(e)
		if err != nil {
			return fmt.Errorf("rootDevices: %w", err)
		}
		if !pci.ValidAddress(r.pf) {
			return fmt.Errorf("rootDevices: %q is not a PCI address (want 0000:00:00.0[#0-3])", r.pf)
		}
		s.rootDevices = append(s.rootDevices, r)
	}
	return nil
}

// parseVFRange reads "pf", "pf#3", "pf#0-3", "pf#0,2-7,9".
func parseVFRange(e string) (vfRange, error) {
	name, spec, has := strings.Cut(e, "#")
	if name == "" {
		return vfRange{}, fmt.Errorf("%q: no PF before '#'", e)
	}
	r := vfRange{pf: name}
	if !has {
		return r, nil
	}
	r.indexes = map[int]bool{}
	for _, part := range strings.Split(spec, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 || a > maxVFIndex {
			return vfRange{}, fmt.Errorf("%q: VF index %q is not a number 0-%d", e, lo, maxVFIndex)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < 0 || b > maxVFIndex {
				return vfRange{}, fmt.Errorf("%q: VF index %q is not a number 0-%d", e, hi, maxVFIndex)
			}
			if b < a {
				return vfRange{}, fmt.Errorf("%q: range %d-%d runs backwards", e, a, b)
			}
		}
		for i := a; i <= b; i++ {
			r.indexes[i] = true
		}
	}
	return r, nil
}
