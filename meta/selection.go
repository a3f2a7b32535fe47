package meta

import (
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"strings"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
)

// Pod annotations read and written by the meta-plugin (the NPWG names, so Multus manifests work).
const (
	NetworksAnnot       = nadv1.NetworkAttachmentAnnot // k8s.v1.cni.cncf.io/networks
	NetworkStatusAnnot  = nadv1.NetworkStatusAnnot     // k8s.v1.cni.cncf.io/network-status
	DefaultNetworkAnnot = "v1.multus-cni.io/default-network"
	ResourceNameAnnot   = "k8s.v1.cni.cncf.io/resourceName"
)

// Selection is one element of the networks annotation. The NAD client's
// NetworkSelectionElement has no deviceID and validates nothing, so the meta-plugin keeps its own
// type with the same JSON names.
type Selection struct {
	Name           string                 `json:"name"`
	Namespace      string                 `json:"namespace,omitempty"`
	Interface      string                 `json:"interface,omitempty"`
	IPs            []string               `json:"ips,omitempty"`
	MAC            string                 `json:"mac,omitempty"`
	InfinibandGUID string                 `json:"infiniband-guid,omitempty"`
	DefaultRoute   []string               `json:"default-route,omitempty"`
	PortMappings   []*nadv1.PortMapEntry  `json:"portMappings,omitempty"`
	Bandwidth      *nadv1.BandwidthEntry  `json:"bandwidth,omitempty"`
	CNIArgs        map[string]interface{} `json:"cni-args,omitempty"`
	DeviceID       string                 `json:"deviceID,omitempty"`
	// InterfaceRequest is the pre-3.2 spelling of interface that Multus still honours; ParseSelection
	// folds it into Interface ("interface" wins when both are given).
	InterfaceRequest string `json:"interfaceRequest,omitempty"`
}

var (
	dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	// NAD names are custom-resource names: DNS-1123 subdomains, dots allowed.
	dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// ifnameOK follows the kernel's rules for a link name: 1-15 bytes, no '/', ':' or whitespace,
// not "." or "..".
func ifnameOK(s string) bool {
	if len(s) == 0 || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	return !strings.ContainsAny(s, "/: \t\n")
}

// ParseSelection parses the networks annotation in either form: the comma form
// `[ns/]name[@ifname],...` or the JSON list. Elements without a namespace get defaultNamespace.
// Every element is validated, so a typo fails the pod with a message naming the element
// instead of reaching a delegate.
func ParseSelection(annotation, defaultNamespace string) ([]Selection, error) {
	s := strings.TrimSpace(annotation)
	if s == "" {
		return nil, nil
	}
	var sels []Selection
	if strings.ContainsAny(s, "[{\"") {
		if err := json.Unmarshal([]byte(s), &sels); err != nil {
			// A bare object is refused, as Multus refuses it: a manifest that works here must
			// work there too.
			hint := ""
			if s[0] == '{' {
				hint = " (a single object must be wrapped in [ ])"
			}
			return nil, fmt.Errorf("annotation %s: not a JSON list of network selections%s: %w", NetworksAnnot, hint, err)
		}
	} else {
		for i, item := range strings.Split(s, ",") {
			item = strings.TrimSpace(item)
			sel, err := parseCommaItem(item)
			if err != nil {
				return nil, fmt.Errorf("annotation %s: element %d %q: %w", NetworksAnnot, i+1, item, err)
			}
			sels = append(sels, sel)
		}
	}
	for i := range sels {
		if sels[i].Interface == "" {
			sels[i].Interface = sels[i].InterfaceRequest
		}
		sels[i].InterfaceRequest = ""
		if sels[i].Namespace == "" {
			sels[i].Namespace = defaultNamespace
		}
		if err := sels[i].validate(); err != nil {
			return nil, fmt.Errorf("annotation %s: element %d (%s): %w", NetworksAnnot, i+1, sels[i].Name, err)
		}
	}
	return sels, nil
}

func parseCommaItem(item string) (Selection, error) {
	var sel Selection
	rest := item
	if ns, name, ok := strings.Cut(rest, "/"); ok {
		if strings.Contains(name, "/") {
			return sel, fmt.Errorf("more than one '/'")
		}
		// An empty namespace or interface ("/net", "net@") means "not given", as Multus reads
		// them: annotations that worked there keep working.
		sel.Namespace, rest = strings.TrimSpace(ns), name
	}
	if name, ifname, ok := strings.Cut(rest, "@"); ok {
		if strings.Contains(ifname, "@") {
			return sel, fmt.Errorf("more than one '@'")
		}
		rest, sel.Interface = name, strings.TrimSpace(ifname)
	}
	// Multus trims every part, so " ns1 / net1 @ eth1 " names ns1, net1 and eth1.
	sel.Name = strings.TrimSpace(rest)
	return sel, nil
}

func (s *Selection) validate() error {
	if s.Name == "" {
		return fmt.Errorf("no network name")
	}
	if !dns1123Subdomain.MatchString(s.Name) || len(s.Name) > 253 {
		return fmt.Errorf("network name %q is not a DNS-1123 name", s.Name)
	}
	if !dns1123Label.MatchString(s.Namespace) || len(s.Namespace) > 63 {
		return fmt.Errorf("namespace %q is not a DNS-1123 label", s.Namespace)
	}
	if s.Interface != "" && !ifnameOK(s.Interface) {
		return fmt.Errorf("interface name %q: want 1-15 characters without '/', ':' or spaces", s.Interface)
	}
	for _, ip := range s.IPs {
		if _, _, err := net.ParseCIDR(ip); err != nil && net.ParseIP(ip) == nil {
			return fmt.Errorf("ips: %q is not an IP address or CIDR", ip)
		}
	}
	if s.MAC != "" {
		if _, err := net.ParseMAC(s.MAC); err != nil {
			return fmt.Errorf("mac %q: %w", s.MAC, err)
		}
	}
	if s.InfinibandGUID != "" {
		// Multus validates the GUID as net.ParseMAC does (EUI-48/EUI-64/20-byte forms).
		if _, err := net.ParseMAC(s.InfinibandGUID); err != nil {
			return fmt.Errorf("infiniband-guid %q: %w", s.InfinibandGUID, err)
		}
	}
	for _, gw := range s.DefaultRoute {
		if net.ParseIP(gw) == nil {
			return fmt.Errorf("default-route: %q is not an IP address", gw)
		}
	}
	for _, pm := range s.PortMappings {
		if pm == nil || pm.ContainerPort <= 0 || pm.ContainerPort > 65535 || pm.HostPort < 0 || pm.HostPort > 65535 {
			return fmt.Errorf("portMappings: ports must be 1-65535")
		}
	}
	return nil
}

// ParseNetworkRef parses `[ns/]name` (the default-network annotation and clusterNetwork).
func ParseNetworkRef(ref, defaultNamespace string) (namespace, name string, err error) {
	sel, err := parseCommaItem(strings.TrimSpace(ref))
	if err != nil {
		return "", "", fmt.Errorf("network reference %q: %w", ref, err)
	}
	if sel.Interface != "" {
		return "", "", fmt.Errorf("network reference %q: an interface name is not allowed here", ref)
	}
	if sel.Namespace == "" {
		sel.Namespace = defaultNamespace
	}
	if err := sel.validate(); err != nil {
		return "", "", fmt.Errorf("network reference %q: %w", ref, err)
	}
	return sel.Namespace, sel.Name, nil
}
