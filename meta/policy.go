package meta

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"github.com/multinet-io/multinet/pci"
)

// Policy is the operator's limit on what NADs and pod annotations may do to the node
// (`"policy"` in the meta-plugin's netconf). NADs of the plugin's namespace and of
// globalNamespaces are trusted (only cluster admins should write there); every other namespace
// is a tenant's. What is on without any setting: no NAD may move a link that carries the node's
// default routes (or its bond/bridge) out of the node or attach a pod to one, tenants may not
// route the node's own networks into a pod, device IDs are PCI addresses (or
// plain device names from kubelet), and only trusted pods and NADs get host port mappings and
// bandwidth settings. Everything else is opt-in, as Multus has none of it.
type Policy struct {
	// TenantTypes, when set, are the only plugin types (IPAM types included, every plugin of a
	// conflist) that NADs of tenant namespaces may use. Unset: any type (Multus behaviour).
	TenantTypes []string `json:"tenantTypes,omitempty"`
	// NamespaceTypes replaces TenantTypes for the namespaces named.
	NamespaceTypes map[string][]string `json:"namespaceTypes,omitempty"`
	// ProtectedLinks are host links (with their bond/bridge masters and slaves) that no NAD
	// may take or attach to, on top of the links of the node's default routes.
	ProtectedLinks []string `json:"protectedLinks,omitempty"`
	// TenantLinks, when set, are the only existing host links NADs of tenant namespaces may
	// name (macvlan master, bridge, host-device, a VF's netdev, ...).
	TenantLinks []string    `json:"tenantLinks,omitempty"`
	Sriov       SriovPolicy `json:"sriov,omitempty"`
	// Capabilities names, per runtime capability, the namespaces besides the trusted ones whose
	// pods may ask for it in the networks annotation and whose NADs may carry it in a plugin's
	// runtimeConfig ("*": all namespaces, as Multus does). portMappings and bandwidth are
	// restricted even when unset: they program the node (DNAT on any host port, the tc limits
	// the NAD's author chose). "cni-args" restricts the selection's cni-args the same way.
	Capabilities map[string][]string `json:"capabilities,omitempty"`
}

// SriovPolicy limits the VF admin settings NADs of tenant namespaces may ask for.
type SriovPolicy struct {
	// TenantAdminFields, when set, are the only admin fields (vlan, vlanQoS, vlanProto, mac,
	// spoofchk, trust, link_state, min_tx_rate, max_tx_rate) a tenant's sriov plugin may set;
	// `mac` covers the selection's mac too. The values that change nothing (vlan 0, vlanQoS 0,
	// spoofchk on, trust off) are always allowed. Unset: all fields (Multus behaviour).
	TenantAdminFields []string `json:"tenantAdminFields,omitempty"`
	// NamespaceAdminFields replaces TenantAdminFields for the namespaces named.
	NamespaceAdminFields map[string][]string `json:"namespaceAdminFields,omitempty"`
	// VLANs: once a resource has a rule, a tenant's sriov NAD on it must ask for a VLAN (no
	// vlan field is VLAN 0, untagged) that a rule for the resource and its namespace allows.
	// With any rule, a tenant's sriov NAD without resourceName is refused.
	VLANs []VLANRule `json:"vlans,omitempty"`
}

// VLANRule allows VLANs ("100-199,300"; 0 is untagged) on a resource to some namespaces (all
// tenant namespaces when empty).
type VLANRule struct {
	ResourceName string   `json:"resourceName"`
	Namespaces   []string `json:"namespaces,omitempty"`
	VLANs        string   `json:"vlans"`
}

// UnmarshalJSON refuses unknown fields: a misspelt lock-down setting must not pass as none.
func (pol *Policy) UnmarshalJSON(b []byte) error {
	type plain Policy
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var p plain
	if err := dec.Decode(&p); err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	*pol = Policy(p)
	return nil
}

var sriovAdminFields = []string{"vlan", "vlanQoS", "vlanProto", "mac", "spoofchk", "trust", "link_state", "min_tx_rate", "max_tx_rate"}

// alwaysRestrictedCaps program the node for the pod: off for tenants unless the policy says so.
var alwaysRestrictedCaps = []string{"portMappings", "bandwidth"}

func (pol *Policy) validate() error {
	for ns, fields := range pol.Sriov.NamespaceAdminFields {
		if err := knownAdminFields(fields); err != nil {
			return fmt.Errorf("policy.sriov.namespaceAdminFields[%s]: %w", ns, err)
		}
	}
	if err := knownAdminFields(pol.Sriov.TenantAdminFields); err != nil {
		return fmt.Errorf("policy.sriov.tenantAdminFields: %w", err)
	}
	for i, r := range pol.Sriov.VLANs {
		if r.ResourceName == "" {
			return fmt.Errorf("policy.sriov.vlans[%d]: resourceName missing", i)
		}
		if _, err := parseVLANRanges(r.VLANs); err != nil {
			return fmt.Errorf("policy.sriov.vlans[%d] (%s): vlans %q: %w", i, r.ResourceName, r.VLANs, err)
		}
	}
	return nil
}

func knownAdminFields(fields []string) error {
	for _, f := range fields {
		if !contains(sriovAdminFields, f) {
			return fmt.Errorf("%q is not an sriov admin field (want %s)", f, strings.Join(sriovAdminFields, ", "))
		}
	}
	return nil
}

// parseVLANRanges reads "100-199,300" into [lo, hi] pairs within 0-4094.
func parseVLANRanges(s string) ([][2]int, error) {
	var out [][2]int
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(strings.TrimSpace(lo))
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(strings.TrimSpace(hi))
		}
		if err != nil || a < 0 || b > 4094 || a > b {
			return nil, fmt.Errorf("%q: want VLAN IDs or ranges within 0-4094", part)
		}
		out = append(out, [2]int{a, b})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no VLANs")
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// trusted: NADs (and pods) of the plugin's namespace and of globalNamespaces.
func (c *Config) trusted(ns string) bool {
	return ns == c.MultinetNamespace || c.isGlobalNamespace(ns)
}

func (pol *Policy) typesFor(ns string) []string {
	if t, ok := pol.NamespaceTypes[ns]; ok {
		return t
	}
	return pol.TenantTypes
}

func (pol *Policy) adminFieldsFor(ns string) []string {
	if f, ok := pol.Sriov.NamespaceAdminFields[ns]; ok {
		if f == nil {
			return []string{}
		}
		return f
	}
	return pol.Sriov.TenantAdminFields
}

// capAllowed tells whether a tenant namespace may use a restricted capability.
func (pol *Policy) capAllowed(capability, ns string) bool {
	list := pol.Capabilities[capability]
	return contains(list, "*") || contains(list, ns)
}

func (pol *Policy) capRestricted(capability string) bool {
	_, listed := pol.Capabilities[capability]
	return listed || contains(alwaysRestrictedCaps, capability)
}

// pciAddress accepts the full form DDDD:BB:DD.F and the short BB:DD.F the sriov plugin takes.
func pciAddress(s string) bool {
	return pci.ValidAddress(s) || (strings.Count(s, ":") == 1 && pci.ValidAddress("0000:"+s))
}

func fullPCIAddress(s string) string {
	if strings.Count(s, ":") == 1 {
		return "0000:" + strings.ToLower(s)
	}
	return strings.ToLower(s)
}

// deviceName is what a device plugin may call a device that is no PCI function: a vhost-user
// slot (`<resourceName>-<i>`), an auxiliary device (`mlx5_core.sf.2`). Never a path.
var deviceName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]*$`)

func plainDeviceName(s string) bool { return deviceName.MatchString(s) && !strings.Contains(s, "..") }

// nadCheck is one NAD-backed delegate as the policy judges it.
type nadCheck struct {
	pod        *corev1.Pod
	nad        string // ns/name
	namespace  string
	trusted    bool
	podTrusted bool
	d          *Delegate
	sel        *Selection // nil for the default-network annotation
}

func (c nadCheck) errorf(format string, a ...interface{}) error {
	return fmt.Errorf("pod %s/%s: network %s: %s", c.pod.Namespace, c.pod.Name, c.nad, fmt.Sprintf(format, a...))
}

func (c nadCheck) pluginErr(i int, typ, format string, a ...interface{}) error {
	return c.errorf("plugin %d (%s): %s", i+1, typ, fmt.Sprintf(format, a...))
}

// enforcePolicy is the planner's one call into the policy, once the delegates are final
// (devices injected): each delegate that comes from a NAD is judged by its namespace: the
// default-network annotation's (ds[0] when the pod has one), then after the static delegates
// one per selection, in order. The cluster network and static delegates are the operator's.
func (p *planner) enforcePolicy(pod *corev1.Pod, ds []Delegate, statics int, sels []Selection) error {
	host := &lazyHost{conf: p.conf, sys: p.sys, views: p.hostViews}
	c := p.conf
	if ref := pod.Annotations[DefaultNetworkAnnot]; ref != "" && len(ds) > 0 {
		ns, name, err := ParseNetworkRef(ref, c.MultinetNamespace)
		if err != nil {
			return err
		}
		chk := nadCheck{pod: pod, nad: ns + "/" + name, namespace: ns, trusted: c.trusted(ns), podTrusted: c.trusted(pod.Namespace), d: &ds[0]}
		if err := c.Policy.checkNAD(chk, host); err != nil {
			return err
		}
	}
	for k := range sels {
		i := 1 + statics + k
		if i >= len(ds) {
			break
		}
		s := &sels[k]
		chk := nadCheck{pod: pod, nad: s.Namespace + "/" + s.Name, namespace: s.Namespace, trusted: c.trusted(s.Namespace),
			podTrusted: c.trusted(pod.Namespace), d: &ds[i], sel: s}
		if err := c.Policy.checkNAD(chk, host); err != nil {
			return err
		}
	}
	return nil
}

// checkNAD applies every rule to one NAD-backed delegate and each plugin of its conflist.
func (pol *Policy) checkNAD(c nadCheck, host *lazyHost) error {
	d := c.d
	if d.DeviceID != "" {
		if d.ResourceName == "" && !pciAddress(d.DeviceID) {
			return c.errorf("deviceID %q refused: want a PCI address (DDDD:BB:DD.F)", d.DeviceID)
		}
		if d.ResourceName != "" && !pciAddress(d.DeviceID) && !plainDeviceName(d.DeviceID) {
			return c.errorf("resource %s: device %q from kubelet refused: neither a PCI address nor a device name", d.ResourceName, d.DeviceID)
		}
	}
	var l struct {
		Plugins []map[string]interface{} `json:"plugins"`
	}
	if err := json.Unmarshal(d.Conf, &l); err != nil {
		return c.errorf("%v", err)
	}
	hasSriov := false
	for i, pl := range l.Plugins {
		typ, _ := pl["type"].(string)
		if err := pol.checkTypes(c, i, typ, pl); err != nil {
			return err
		}
		if err := checkDeviceFields(c, i, typ, pl); err != nil {
			return err
		}
		if err := pol.checkLinks(c, i, typ, pl, host); err != nil {
			return err
		}
		if typ == "sriov" {
			hasSriov = true
			if err := pol.checkSriov(c, i, pl); err != nil {
				return err
			}
		}
		if !c.trusted {
			if rc, ok := pl["runtimeConfig"].(map[string]interface{}); ok {
				for _, k := range mapKeys(rc) {
					if pol.capRestricted(k) && !pol.capAllowed(k, c.namespace) {
						return c.pluginErr(i, typ, "runtimeConfig.%s refused: namespace %s is neither trusted nor in policy.capabilities.%s", k, c.namespace, k)
					}
				}
			}
		}
	}
	if c.sel == nil || c.podTrusted {
		return nil
	}
	// What the pod asked for in its annotation: honoured only where a plugin would act on it.
	for _, k := range mapKeys(d.CapabilityArgs) {
		if k == "deviceID" || !pol.capRestricted(k) || pol.capAllowed(k, c.pod.Namespace) {
			continue
		}
		for i, pl := range l.Plugins {
			if caps, _ := pl["capabilities"].(map[string]interface{}); caps[k] == true {
				typ, _ := pl["type"].(string)
				return c.pluginErr(i, typ, "%s from the pod's annotation refused: namespace %s is neither trusted nor in policy.capabilities.%s", k, c.pod.Namespace, k)
			}
		}
	}
	if len(c.sel.CNIArgs) > 0 && pol.capRestricted("cni-args") && !pol.capAllowed("cni-args", c.pod.Namespace) {
		return c.errorf("cni-args from the pod's annotation refused: namespace %s is neither trusted nor in policy.capabilities.cni-args", c.pod.Namespace)
	}
	if hasSriov && c.sel.MAC != "" {
		if allowed := pol.adminFieldsFor(c.pod.Namespace); allowed != nil && !contains(allowed, "mac") {
			return c.errorf("mac %s from the pod's annotation refused: policy.sriov allows namespace %s the admin fields %v only", c.sel.MAC, c.pod.Namespace, allowed)
		}
	}
	return nil
}

func (pol *Policy) checkTypes(c nadCheck, i int, typ string, pl map[string]interface{}) error {
	if c.trusted {
		return nil
	}
	allowed := pol.typesFor(c.namespace)
	if allowed == nil {
		return nil
	}
	if !contains(allowed, typ) {
		return c.pluginErr(i, typ, "type %q refused: policy allows namespace %s the types %v only", typ, c.namespace, allowed)
	}
	if ipam, ok := pl["ipam"].(map[string]interface{}); ok {
		if it, _ := ipam["type"].(string); it != "" && !contains(allowed, it) {
			return c.pluginErr(i, typ, "ipam type %q refused: policy allows namespace %s the types %v only", it, c.namespace, allowed)
		}
	}
	return nil
}

// checkDeviceFields: whatever names a device in a plugin (written in the NAD or injected) is a
// PCI address or a plain device name, never a path: host-device joins pciBusID and
// runtimeConfig.deviceID onto /sys/bus/pci/devices.
func checkDeviceFields(c nadCheck, i int, typ string, pl map[string]interface{}) error {
	check := func(field string, v interface{}, pciOnly bool) error {
		if v == nil {
			return nil
		}
		s, ok := v.(string)
		if !ok || (!pciAddress(s) && (pciOnly || !plainDeviceName(s))) {
			return c.pluginErr(i, typ, "%s %v refused: want a PCI address (DDDD:BB:DD.F)", field, v)
		}
		return nil
	}
	if err := check("pciBusID", pl["pciBusID"], true); err != nil {
		return err
	}
	if err := check("deviceID", pl["deviceID"], typ == "sriov" || typ == "ib-sriov"); err != nil {
		return err
	}
	if rc, ok := pl["runtimeConfig"].(map[string]interface{}); ok {
		if err := check("runtimeConfig.deviceID", rc["deviceID"], false); err != nil {
			return err
		}
	}
	if typ == "host-device" && c.d.ResourceName != "" {
		// host-device prefers these over the device kubelet allocated.
		for _, f := range []string{"device", "hwaddr", "kernelpath"} {
			if v, _ := pl[f].(string); v != "" {
				return c.pluginErr(i, typ, "%s %q refused: the network takes its device from resource %s", f, v, c.d.ResourceName)
			}
		}
	}
	return nil
}

// linkRef is a host link a plugin would take (move into the pod) or attach to.
type linkRef struct {
	field string
	kind  string // name, mac, kernelpath, pci, defaultRoute
	value string
	take  bool
	// allocated: the device is the one kubelet gave the pod, not the NAD's or pod's choice.
	allocated bool
}

// hostLinkRefs lists the host links a plugin of a reference (or common third-party) type
// names, per its netconf fields.
func hostLinkRefs(typ string, pl map[string]interface{}) []linkRef {
	str := func(k string) string { s, _ := pl[k].(string); return s }
	flag := func(k string) bool { b, _ := pl[k].(bool); return b }
	var refs []linkRef
	switch typ {
	case "host-device":
		for _, f := range [][2]string{{"device", "name"}, {"hwaddr", "mac"}, {"kernelpath", "kernelpath"}, {"pciBusID", "pci"}} {
			if v := str(f[0]); v != "" {
				refs = append(refs, linkRef{field: f[0], kind: f[1], value: v, take: true})
			}
		}
		if rc, ok := pl["runtimeConfig"].(map[string]interface{}); ok {
			if v, _ := rc["deviceID"].(string); v != "" {
				refs = append(refs, linkRef{field: "runtimeConfig.deviceID", kind: "pci", value: v, take: true})
			}
		}
	case "sriov", "ib-sriov":
		if v := str("deviceID"); v != "" {
			refs = append(refs, linkRef{field: "deviceID", kind: "pci", value: v, take: true})
		}
	case "macvlan", "ipvlan", "macvtap", "vlan":
		if flag("linkInContainer") {
			break
		}
		if v := str("master"); v != "" {
			refs = append(refs, linkRef{field: "master", kind: "name", value: v})
		} else if typ != "vlan" {
			// The plugin takes the link of the node's default route.
			refs = append(refs, linkRef{field: "master", kind: "defaultRoute"})
		}
	case "bridge":
		br := str("bridge")
		if br == "" {
			br = "cni0"
		}
		refs = append(refs, linkRef{field: "bridge", kind: "name", value: br})
	case "ovs":
		// (tap's bridge is looked up in the pod's namespace: not a host link.)
		if v := str("bridge"); v != "" {
			refs = append(refs, linkRef{field: "bridge", kind: "name", value: v})
		}
	case "bond":
		if flag("linksInContainer") {
			break
		}
		links, _ := pl["links"].([]interface{})
		for _, l := range links {
			if m, ok := l.(map[string]interface{}); ok {
				if v, _ := m["name"].(string); v != "" {
					refs = append(refs, linkRef{field: "links", kind: "name", value: v, take: true})
				}
			}
		}
	}
	return refs
}

func (pol *Policy) checkLinks(c nadCheck, i int, typ string, pl map[string]interface{}, host *lazyHost) error {
	refs := hostLinkRefs(typ, pl)
	routes := !c.trusted && routesOnHost(typ, pl)
	if len(refs) == 0 && !routes {
		return nil
	}
	hv, err := host.get()
	if err != nil {
		return c.pluginErr(i, typ, "cannot check its host links: %v", err)
	}
	if routes {
		var podIPs []string
		if c.sel != nil {
			podIPs = c.sel.IPs
		}
		if err := judgeNodeNets(ipamClaims(pl, podIPs), hv); err != nil {
			return c.pluginErr(i, typ, "%s", err)
		}
	}
	for _, r := range refs {
		r.allocated = r.kind == "pci" && c.d.ResourceName != ""
		for _, name := range hv.resolve(r) {
			if err := judgeLink(pol, c.trusted, r, name, hv); err != nil {
				return c.pluginErr(i, typ, "%s", err)
			}
		}
	}
	return nil
}

// judgeLink is the host-link rule: nothing takes a protected link; the operator's protected
// links and the default-route links are attached to by no NAD; tenants name only
// policy.tenantLinks when that is set.
func judgeLink(pol *Policy, trusted bool, r linkRef, name string, hv *hostView) error {
	what := r.field
	if r.value != "" && r.value != name {
		what = fmt.Sprintf("%s %s (host link %s)", r.field, r.value, name)
	} else {
		what = fmt.Sprintf("%s %s", r.field, name)
	}
	if pr, ok := hv.protected[name]; ok {
		switch {
		case r.take:
			return fmt.Errorf("%s refused: the link %s; no NAD may take it from the node", what, pr.why)
		default:
			// Also for trusted NADs: a macvlan or bridge port on the node's uplink shares the
			// node's own L2 with a pod (issue 12: "always").
			return fmt.Errorf("%s refused: the link %s; no NAD may attach to it", what, pr.why)
		}
	}
	if !trusted && !r.allocated && pol.TenantLinks != nil && hv.exists[name] && !contains(pol.TenantLinks, name) {
		return fmt.Errorf("%s refused: policy.tenantLinks allows tenant NADs the host links %v only", what, pol.TenantLinks)
	}
	return nil
}

func (pol *Policy) checkSriov(c nadCheck, i int, pl map[string]interface{}) error {
	if c.trusted {
		return nil
	}
	if allowed := pol.adminFieldsFor(c.namespace); allowed != nil {
		for _, f := range sriovAdminFields {
			v, set := pl[f]
			if !set || v == nil || contains(allowed, f) || noChange(f, v) {
				continue
			}
			return c.pluginErr(i, "sriov", "%s %v refused: policy.sriov allows namespace %s the admin fields %v only", f, v, c.namespace, allowed)
		}
	}
	if len(pol.Sriov.VLANs) == 0 {
		return nil
	}
	res := c.d.ResourceName
	if res == "" {
		return c.pluginErr(i, "sriov", "refused: policy.sriov.vlans needs the NAD's %s annotation to check the VLAN", ResourceNameAnnot)
	}
	vlan := 0
	if v, ok := pl["vlan"].(float64); ok {
		vlan = int(v)
	}
	ruled, ok := false, false
	for _, r := range pol.Sriov.VLANs {
		if r.ResourceName != res {
			continue
		}
		ruled = true
		if len(r.Namespaces) > 0 && !contains(r.Namespaces, c.namespace) {
			continue
		}
		ranges, _ := parseVLANRanges(r.VLANs)
		for _, rg := range ranges {
			ok = ok || (vlan >= rg[0] && vlan <= rg[1])
		}
	}
	if ruled && !ok {
		return c.pluginErr(i, "sriov", "vlan %d refused: policy.sriov.vlans does not allow it to namespace %s on resource %s", vlan, c.namespace, res)
	}
	return nil
}

// noChange: admin values that leave a VF as the node restores it.
func noChange(field string, v interface{}) bool {
	switch field {
	case "vlan", "vlanQoS":
		n, ok := v.(float64)
		return ok && n == 0
	case "spoofchk":
		return v == "on"
	case "trust":
		return v == "off"
	}
	return false
}

// nodeNet is one of the node's own networks or gateways.
type nodeNet struct {
	net  *net.IPNet
	what string
}

func hostPrefix(ip net.IP) *net.IPNet {
	if ip4 := ip.To4(); ip4 != nil {
		return &net.IPNet{IP: ip4, Mask: net.CIDRMask(32, 32)}
	}
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(128, 128)}
}

func overlaps(a, b *net.IPNet) bool { return a.Contains(b.IP) || b.Contains(a.IP) }

// hostRoutingTypes put routes or addresses for the pod's addresses on the node: ptp a route
// to each pod address, bridge with isGateway the gateway address and the subnet's route. A
// subnet that overlaps the node's own networks diverts the node's traffic (a pod "at" the
// node's gateway address gets the node's egress).
func routesOnHost(typ string, pl map[string]interface{}) bool {
	gw, _ := pl["isGateway"].(bool)
	dgw, _ := pl["isDefaultGateway"].(bool)
	return typ == "ptp" || (typ == "bridge" && (gw || dgw))
}

// ipamClaims lists the networks a plugin's IPAM (host-local ranges, static addresses,
// whereabouts ranges) and the pod's ips may give the pod.
func ipamClaims(pl map[string]interface{}, podIPs []string) []string {
	var out []string
	ipam, _ := pl["ipam"].(map[string]interface{})
	str := func(m map[string]interface{}, k string) {
		if v, _ := m[k].(string); v != "" {
			out = append(out, v)
		}
	}
	if ipam != nil {
		str(ipam, "subnet")
		str(ipam, "range") // whereabouts
		ranges, _ := ipam["ipRanges"].([]interface{})
		for _, r := range ranges {
			if m, ok := r.(map[string]interface{}); ok {
				str(m, "range")
			}
		}
		sets, _ := ipam["ranges"].([]interface{})
		for _, set := range sets {
			rs, _ := set.([]interface{})
			for _, r := range rs {
				if m, ok := r.(map[string]interface{}); ok {
					str(m, "subnet")
				}
			}
		}
		addrs, _ := ipam["addresses"].([]interface{})
		for _, a := range addrs {
			if m, ok := a.(map[string]interface{}); ok {
				str(m, "address")
			}
		}
	}
	return append(out, podIPs...)
}

func parsePrefix(s string) *net.IPNet {
	if ip, n, err := net.ParseCIDR(s); err == nil {
		n.IP = ip.Mask(n.Mask)
		return n
	}
	if ip := net.ParseIP(s); ip != nil {
		return hostPrefix(ip)
	}
	return nil
}

// judgeNodeNets refuses a tenant plugin that routes on the node a network overlapping one of
// the node's own.
func judgeNodeNets(claims []string, hv *hostView) error {
	for _, c := range claims {
		p := parsePrefix(c)
		if p == nil {
			continue
		}
		for _, n := range hv.nets {
			if overlaps(p, n.net) {
				return fmt.Errorf("address range %s refused: it overlaps %s, and the plugin routes the pod's addresses on the node", c, n.what)
			}
		}
	}
	return nil
}

// protection says why a host link is protected.
type protection struct {
	why      string
	operator bool
}

// hostView is what the policy needs of the host: read once per ADD, only when a NAD names links
// (in a long-lived process, HostViews keeps it until the host changes). Read-only once built.
type hostView struct {
	protected   map[string]protection
	exists      map[string]bool
	byMAC       map[string][]string
	defaultLink string // the link macvlan/ipvlan use when given no master
	// nets are the node's own networks (its addresses' prefixes) and gateways (of its default
	// routes, as /32 or /128), with what they are.
	nets []nodeNet
	sys  *pci.SysFS
}

func (hv *hostView) resolve(r linkRef) []string {
	switch r.kind {
	case "name":
		return []string{r.value}
	case "defaultRoute":
		if hv.defaultLink == "" {
			return nil
		}
		return []string{hv.defaultLink}
	case "mac":
		if mac, err := net.ParseMAC(r.value); err == nil {
			return hv.byMAC[mac.String()]
		}
	case "pci":
		if !pciAddress(r.value) {
			return nil // refused by checkDeviceFields, or a device name (auxiliary)
		}
		addr := fullPCIAddress(r.value)
		names, _ := hv.sys.Netdevs(addr)
		if m, _ := filepath.Glob(hv.sys.DevicePath(addr, "virtio*", "net", "*")); len(m) > 0 {
			for _, p := range m {
				names = append(names, filepath.Base(p))
			}
		}
		return names
	case "kernelpath":
		rel, ok := strings.CutPrefix(filepath.Clean(r.value), "/sys/")
		if !ok {
			return nil // host-device refuses it
		}
		entries, _ := os.ReadDir(filepath.Join(hv.sys.Root, rel, "net"))
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return names
	}
	return nil
}

type lazyHost struct {
	conf  *Config
	sys   *pci.SysFS // nil: /sys
	views *HostViews // nil: read the host
	hv    *hostView
	err   error
	done  bool
}

func (h *lazyHost) get() (*hostView, error) {
	if !h.done {
		sys := h.sys
		if sys == nil {
			sys = pci.New("")
		}
		if h.views != nil {
			h.hv, h.err = h.views.view(sys, h.conf.Policy.ProtectedLinks)
		} else {
			h.hv, h.err = readHost(sys, h.conf.Policy.ProtectedLinks)
		}
		h.done = true
	}
	return h.hv, h.err
}

// readHost reads, in the namespace it runs in (the node's: the runtime runs us there), the
// links that carry a default route (IPv4 and IPv6, any table) and the operator's protected
// links, each with what it stands on: the bond or bridge above it, the link under a VLAN or
// macvlan, and the slaves of a protected bond or bridge.
func readHost(sys *pci.SysFS, operator []string) (*hostView, error) {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list host links: %w", err)
	}
	hv := &hostView{protected: map[string]protection{}, exists: map[string]bool{}, byMAC: map[string][]string{}, sys: sys}
	byIndex := map[int]netlink.Link{}
	for _, l := range links {
		a := l.Attrs()
		byIndex[a.Index] = l
		hv.exists[a.Name] = true
		if len(a.HardwareAddr) > 0 {
			hv.byMAC[a.HardwareAddr.String()] = append(hv.byMAC[a.HardwareAddr.String()], a.Name)
		}
	}
	type seed struct {
		index int
		p     protection
	}
	var seeds []seed
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		famName := map[int]string{netlink.FAMILY_V4: "IPv4", netlink.FAMILY_V6: "IPv6"}[fam]
		routes, err := netlinksafe.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("list host %s routes: %w", famName, err)
		}
		sort.SliceStable(routes, func(i, j int) bool {
			return routes[i].Table == unix.RT_TABLE_MAIN && routes[j].Table != unix.RT_TABLE_MAIN
		})
		for _, r := range routes {
			if !isDefault(r) || r.Type != unix.RTN_UNICAST {
				continue
			}
			idx := []int{r.LinkIndex}
			for _, nh := range r.MultiPath {
				idx = append(idx, nh.LinkIndex)
			}
			gws := []net.IP{r.Gw}
			for _, nh := range r.MultiPath {
				gws = append(gws, nh.Gw)
			}
			for _, gw := range gws {
				if gw != nil && !gw.IsLinkLocalUnicast() {
					hv.nets = append(hv.nets, nodeNet{hostPrefix(gw), fmt.Sprintf("the node's %s default gateway %s", famName, gw)})
				}
			}
			for _, i := range idx {
				if l, ok := byIndex[i]; ok {
					if hv.defaultLink == "" && r.Table == unix.RT_TABLE_MAIN {
						hv.defaultLink = l.Attrs().Name
					}
					seeds = append(seeds, seed{i, protection{why: fmt.Sprintf("%s carries the node's %s default route", l.Attrs().Name, famName)}})
				}
			}
		}
	}
	addrs, err := netlinksafe.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	for _, a := range addrs {
		if a.IPNet == nil || !a.IP.IsGlobalUnicast() {
			continue
		}
		name := ""
		if l, ok := byIndex[a.LinkIndex]; ok {
			name = " on " + l.Attrs().Name
		}
		prefix := &net.IPNet{IP: a.IP.Mask(a.Mask), Mask: a.Mask}
		hv.nets = append(hv.nets, nodeNet{prefix, fmt.Sprintf("the node's network %s (address %s%s)", prefix, a.IP, name)})
	}
	for _, name := range operator {
		for _, l := range links {
			if l.Attrs().Name == name {
				seeds = append(seeds, seed{l.Attrs().Index, protection{why: name + " is in policy.protectedLinks", operator: true}})
			}
		}
		// Listed but absent (yet): protected by name all the same.
		if !hv.exists[name] {
			hv.protected[name] = protection{why: name + " is in policy.protectedLinks", operator: true}
		}
	}
	// Closure over master (bond/bridge above), parent (the link under a vlan/macvlan) and
	// slaves (below a protected bond/bridge). An operator mark wins over a default-route one.
	got := map[int]protection{}
	var queue []seed
	add := func(s seed) {
		if old, ok := got[s.index]; ok && (old.operator || !s.p.operator) {
			return
		}
		got[s.index] = s.p
		queue = append(queue, s)
	}
	for _, s := range seeds {
		add(s)
	}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		l := byIndex[s.index]
		a := l.Attrs()
		if m, ok := byIndex[a.MasterIndex]; ok && a.MasterIndex > 0 {
			add(seed{a.MasterIndex, protection{why: fmt.Sprintf("%s is the master of %s: %s", m.Attrs().Name, a.Name, s.p.why), operator: s.p.operator}})
		}
		switch l.Type() {
		case "vlan", "macvlan", "ipvlan", "macvtap":
			if parent, ok := byIndex[a.ParentIndex]; ok && a.ParentIndex > 0 {
				add(seed{a.ParentIndex, protection{why: fmt.Sprintf("%s is under %s: %s", parent.Attrs().Name, a.Name, s.p.why), operator: s.p.operator}})
			}
		}
		for _, other := range links {
			if o := other.Attrs(); o.MasterIndex == s.index {
				add(seed{o.Index, protection{why: fmt.Sprintf("%s is a slave of %s: %s", o.Name, a.Name, s.p.why), operator: s.p.operator}})
			}
		}
	}
	for i, p := range got {
		hv.protected[byIndex[i].Attrs().Name] = p
	}
	return hv, nil
}

func mapKeys(m map[string]interface{}) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
