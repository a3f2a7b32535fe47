// Package dpdk is the application side of multinet's DPDK data path: from what multinet gave a
// pod (the network-status annotation through a downward-API file, the device plugin's
// PCIDEVICE_* and VHOSTUSER_* environment) it builds the EAL arguments a DPDK application needs:
// `-a <pci>` for VFs bound to a userspace driver and `--vdev net_virtio_user<i>,path=...` for
// vhost-user slots, in the order of the pod's networks.
package dpdk

import (
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"

	"github.com/multinet-io/multinet/pci"
)

// NetworkStatusAnnot is the annotation the meta-plugin writes (Multus's name).
const NetworkStatusAnnot = "k8s.v1.cni.cncf.io/network-status"

// DefaultAnnotationsFile is where network-resources-injector mounts the downward API.
const DefaultAnnotationsFile = "/etc/podnetinfo/annotations"

// Kinds of device a DPDK application takes.
const (
	KindPCI       = "pci"
	KindVhostUser = "vhost-user"
)

// Device is one DPDK port the pod has.
type Device struct {
	Network   string `json:"network,omitempty"`   // the attachment's name in network-status
	Interface string `json:"interface,omitempty"` // its interface name (net1, ...)
	Kind      string `json:"kind"`
	PCI       string `json:"pci,omitempty"`
	Socket    string `json:"socket,omitempty"`
	Mode      string `json:"mode,omitempty"` // vhost-user: the pod's side, client or server
	MAC       string `json:"mac,omitempty"`
	Source    string `json:"source"` // network-status, or the env var it came from
}

// ParseAnnotations reads a downward-API annotations file: one `key="value"` per line, the value
// quoted as Go's %q does (which is what kubelet writes).
func ParseAnnotations(data []byte) (map[string]string, error) {
	out := map[string]string{}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("annotations line %d: want key=\"value\"", i+1)
		}
		uv, err := strconv.Unquote(v)
		if err != nil {
			return nil, fmt.Errorf("annotations line %d (%s): value is not a quoted string: %w", i+1, k, err)
		}
		out[k] = uv
	}
	return out, nil
}

var pciRe = regexp.MustCompile(`^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$`)

// validSocket refuses socket paths DPDK cannot take: devargs split on commas, and sun_path is
// 108 bytes.
func validSocket(p string) error {
	switch {
	case !filepath.IsAbs(p):
		return fmt.Errorf("socket path %q is not absolute", p)
	case len(p) > 107:
		return fmt.Errorf("socket path %s is %d bytes, over the 107 a unix socket allows", p, len(p))
	case strings.ContainsAny(p, ", \t\n\x00\"'"):
		return fmt.Errorf("socket path %q has a comma, quote or space, which DPDK devargs cannot carry", p)
	}
	return nil
}

// FromNetworkStatus lists the DPDK ports in a network-status annotation, in its order: the
// pod's networks as the meta-plugin attached them. Entries without device-info (kernel
// interfaces, the cluster network) are skipped.
func FromNetworkStatus(status []byte) ([]Device, error) {
	var sts []nadv1.NetworkStatus
	if err := json.Unmarshal(status, &sts); err != nil {
		return nil, fmt.Errorf("network-status: %w", err)
	}
	var out []Device
	for i, st := range sts {
		di := st.DeviceInfo
		if di == nil {
			continue
		}
		where := fmt.Sprintf("network-status[%d] (%s %s)", i, st.Name, st.Interface)
		d := Device{Network: st.Name, Interface: st.Interface, MAC: st.Mac, Source: "network-status"}
		if d.MAC != "" {
			if hw, err := net.ParseMAC(d.MAC); err != nil || len(hw) != 6 {
				return nil, fmt.Errorf("%s: mac %q is not an Ethernet MAC address", where, d.MAC)
			}
		}
		switch di.Type {
		case nadv1.DeviceInfoTypePCI:
			if di.Pci == nil || di.Pci.PciAddress == "" {
				return nil, fmt.Errorf("%s: pci device-info without pci-address", where)
			}
			d.Kind, d.PCI = KindPCI, strings.ToLower(di.Pci.PciAddress)
			if !pciRe.MatchString(d.PCI) {
				return nil, fmt.Errorf("%s: pci-address %q is not a PCI address", where, di.Pci.PciAddress)
			}
		case nadv1.DeviceInfoTypeVHostUser:
			if di.VhostUser == nil || di.VhostUser.Path == "" {
				return nil, fmt.Errorf("%s: vhost-user device-info without path", where)
			}
			d.Kind, d.Socket, d.Mode = KindVhostUser, di.VhostUser.Path, di.VhostUser.Mode
			if err := validSocket(d.Socket); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			if d.Mode != "" && d.Mode != "client" && d.Mode != "server" {
				return nil, fmt.Errorf("%s: vhost-user mode %q: want client or server", where, d.Mode)
			}
		default:
			continue // vdpa, memif: not DPDK EAL devices we know how to pass
		}
		out = append(out, d)
	}
	return out, nil
}

// EnvDevices is what the device plugin's environment says a container got.
type EnvDevices struct {
	// PCI lists devices of PCIDEVICE_* variables; VFIO says whether the _INFO entry has a vfio
	// mount (nil: no _INFO for it).
	PCI []EnvPCI
	// Vhost lists slots of VHOSTUSER_* variables.
	Vhost []Device
}

// EnvPCI is one device of a PCIDEVICE_* variable.
type EnvPCI struct {
	Address string
	Var     string
	VFIO    *bool
}

type envInfo struct {
	VFIO *struct {
		Mount string `json:"mount"`
	} `json:"vfio,omitempty"`
	VhostUser *struct {
		Mode string `json:"mode"`
		Path string `json:"path"`
	} `json:"vhost-user,omitempty"`
}

// ParseEnv reads PCIDEVICE_* and VHOSTUSER_* variables (KEY=VALUE strings as os.Environ gives
// them), in variable-name order.
func ParseEnv(env []string) (*EnvDevices, error) {
	vars := map[string]string{}
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if ok && (strings.HasPrefix(k, "PCIDEVICE_") || strings.HasPrefix(k, "VHOSTUSER_")) {
			vars[k] = v
		}
	}
	names := make([]string, 0, len(vars))
	for k := range vars {
		if strings.HasSuffix(k, "_INFO") {
			if _, base := vars[strings.TrimSuffix(k, "_INFO")]; base {
				continue
			}
		}
		names = append(names, k)
	}
	sort.Strings(names)
	out := &EnvDevices{}
	for _, k := range names {
		info := map[string]envInfo{}
		if s, ok := vars[k+"_INFO"]; ok && s != "" {
			if err := json.Unmarshal([]byte(s), &info); err != nil {
				return nil, fmt.Errorf("%s_INFO: %w", k, err)
			}
		}
		for _, id := range strings.Split(vars[k], ",") {
			id = strings.TrimSpace(id)
			if id == "" {
				continue
			}
			if strings.HasPrefix(k, "PCIDEVICE_") {
				addr := strings.ToLower(id)
				if !pciRe.MatchString(addr) {
					return nil, fmt.Errorf("%s: %q is not a PCI address", k, id)
				}
				p := EnvPCI{Address: addr, Var: k}
				if e, ok := info[id]; ok {
					vfio := e.VFIO != nil
					p.VFIO = &vfio
				}
				out.PCI = append(out.PCI, p)
				continue
			}
			// VHOSTUSER_<RES> lists the sockets as the pod sees them; _INFO is keyed by slot.
			d := Device{Kind: KindVhostUser, Socket: id, Source: k}
			for _, e := range info {
				if e.VhostUser != nil && e.VhostUser.Path == id {
					d.Mode = e.VhostUser.Mode
				}
			}
			if err := validSocket(id); err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			out.Vhost = append(out.Vhost, d)
		}
	}
	return out, nil
}

// Plan merges network-status and the environment: network-status gives the order and the
// vhost-user mode; devices only the environment names (no network-status file, or a resource
// requested without a network) follow in variable order. A PCI device is taken only when it is
// bound to a userspace driver (the _INFO vfio entry, else driverOf); a kernel-netdev VF is the
// kernel's, and reported in skipped.
func Plan(status []Device, env *EnvDevices, driverOf func(pci string) string) (devs []Device, skipped []string) {
	vfio := map[string]*bool{}
	if env != nil {
		for _, p := range env.PCI {
			vfio[p.Address] = p.VFIO
		}
	}
	userspace := func(addr string) bool {
		if v := vfio[addr]; v != nil {
			return *v
		}
		return driverOf != nil && pci.UserspaceDriver(driverOf(addr))
	}
	// A slot's socket is <dir>/<slot>/<name> on the host and in the pod alike, but the two dirs
	// differ when the pool has a containerDir that the NAD does not repeat: network-status then
	// names the host's path. The device plugin's variable names what the container sees, so
	// the slot is taken once, at that path, in network-status's place.
	podPath := map[string]string{}
	if env != nil {
		for _, d := range env.Vhost {
			podPath[slotKey(d.Socket)] = d.Socket
		}
	}
	seenPCI, seenSock := map[string]bool{}, map[string]bool{}
	take := func(d Device) {
		if d.Kind == KindVhostUser {
			if p, ok := podPath[slotKey(d.Socket)]; ok && p != d.Socket {
				d.Socket = p
			}
		}
		switch d.Kind {
		case KindPCI:
			if seenPCI[d.PCI] {
				return
			}
			seenPCI[d.PCI] = true
			if !userspace(d.PCI) {
				skipped = append(skipped, fmt.Sprintf("%s (%s): not bound to a userspace driver (a kernel netdev)", d.PCI, d.Source))
				return
			}
		case KindVhostUser:
			if seenSock[d.Socket] {
				return
			}
			seenSock[d.Socket] = true
		}
		devs = append(devs, d)
	}
	for _, d := range status {
		take(d)
	}
	if env != nil {
		for _, p := range env.PCI {
			take(Device{Kind: KindPCI, PCI: p.Address, Source: p.Var})
		}
		for _, d := range env.Vhost {
			take(d)
		}
	}
	return devs, skipped
}

// slotKey is a vhost-user socket's slot and file name: "vhost-0/sock".
func slotKey(sock string) string {
	return filepath.Join(filepath.Base(filepath.Dir(sock)), filepath.Base(sock))
}

// Options shape the vhost-user devargs.
type Options struct {
	Queues int  // queues=N on each virtio-user port; 0: DPDK's default
	MAC    bool // pass the network-status MAC as mac=
}

// EALArgs renders the EAL arguments: one -a per PCI device, one --vdev per vhost-user slot
// (server=1 when the pod's side is the server, as for an OVS dpdkvhostuserclient port), and
// --no-pci when the pod has no PCI device, so EAL does not probe the bus.
func EALArgs(devs []Device, o Options) []string {
	var out []string
	vdev, npci := 0, 0
	for _, d := range devs {
		switch d.Kind {
		case KindPCI:
			out = append(out, "-a", d.PCI)
			npci++
		case KindVhostUser:
			s := fmt.Sprintf("net_virtio_user%d,path=%s", vdev, d.Socket)
			if d.Mode == "server" {
				s += ",server=1"
			}
			if o.Queues > 0 {
				s += fmt.Sprintf(",queues=%d", o.Queues)
			}
			if o.MAC && d.MAC != "" {
				s += ",mac=" + d.MAC
			}
			out = append(out, "--vdev", s)
			vdev++
		}
	}
	if npci == 0 {
		out = append(out, "--no-pci")
	}
	return out
}
