// Package vhostuser is the vhost-user CNI plugin (`"type": "vhostuser"`): it turns a vhost-user
// socket slot, which the device plugin allocated to a pod and the meta-plugin passes as
// deviceID, into a `dpdkvhostuserclient` port on an OVS-DPDK bridge. OVS is the vhost-user
// client; the pod's DPDK application listens on the slot's socket (`server=1`), so the slot's
// pool must be in server mode. DEL removes the port and the stale socket file.
//
// OVSDB is driven through ovs-vsctl: one transaction per change (so a failed ADD never leaves
// half a port), no generated schema model to keep in step with the running OVS, and the same
// commands an operator uses to inspect what the plugin did.
package vhostuser

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// DefaultOVSDB is where Debian's and upstream's packaging put the OVSDB socket.
const DefaultOVSDB = "unix:/var/run/openvswitch/db.sock"

// Vhost-user modes as device-info spells them (the pod's side): OVS's dpdkvhostuserclient port
// needs the pod to be the server.
const (
	ModeServer = "server"
	ModeClient = "client"
)

// NetConf is the plugin's network configuration.
type NetConf struct {
	types.NetConf

	// DeviceID is the slot name (e.g. "vhost_user-3"), injected by the meta-plugin.
	DeviceID string `json:"deviceID"`
	PCIBusID string `json:"pciBusID,omitempty"` // injected alongside deviceID; not used

	Bridge string `json:"bridge"`
	VLAN   int    `json:"vlan,omitempty"` // access tag; 0: untagged
	MTU    int    `json:"mtu,omitempty"`  // mtu_request; 0: OVS's default
	// OVSDB is the OVSDB server: "unix:<path>", "tcp:<ip>:<port>", or an absolute socket path.
	OVSDB string `json:"ovsdbSocket,omitempty"`
	// SocketDir is the pool's host directory (the device plugin's vhostUser.dir). Empty: the
	// slot's socket is read from the device plugin's device-info file.
	SocketDir string `json:"socketDir,omitempty"`
	// ContainerDir is where the pod sees SocketDir (vhostUser.containerDir); default: the same.
	ContainerDir string `json:"containerDir,omitempty"`
	SocketName   string `json:"socketName,omitempty"` // default: sock
	// Timeout bounds each ovs-vsctl call, in seconds (it waits for ovs-vswitchd to apply).
	Timeout  int    `json:"ovsTimeout,omitempty"`
	LogLevel string `json:"logLevel,omitempty"`
	LogFile  string `json:"logFile,omitempty"`

	RuntimeConfig struct {
		DeviceID string `json:"deviceID,omitempty"`
	} `json:"runtimeConfig,omitempty"`
}

var (
	// Slot names are <resourceName>-<i>; resource names match ^[a-zA-Z0-9_-]+$.
	slotRe   = regexp.MustCompile(`^[a-zA-Z0-9_.-]+$`)
	bridgeRe = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,15}$`)
)

// maxMTU is OVS-DPDK's limit (9728-byte frames less the Ethernet header and CRC).
const maxMTU = 9710

// LoadConf parses and validates a netconf before anything on the host is touched. Errors name
// the field.
func LoadConf(stdin []byte) (*NetConf, error) {
	c, err := parse(stdin)
	if err != nil {
		return nil, err
	}
	if c.RuntimeConfig.DeviceID != "" {
		c.DeviceID = c.RuntimeConfig.DeviceID
	}
	if c.DeviceID == "" {
		return nil, fmt.Errorf("vhostuser: netconf %q: field \"deviceID\" is missing (the vhost-user slot, normally set by the meta-plugin from the device plugin's allocation)", c.Name)
	}
	if !slotRe.MatchString(c.DeviceID) || c.DeviceID == "." || c.DeviceID == ".." {
		return nil, fmt.Errorf("vhostuser: netconf %q: field \"deviceID\" %q is not a vhost-user slot name", c.Name, c.DeviceID)
	}
	return c, nil
}

// parse validates everything but the slot: STATUS gets a netconf without one.
func parse(stdin []byte) (*NetConf, error) {
	c := &NetConf{}
	if err := json.Unmarshal(stdin, c); err != nil {
		return nil, fmt.Errorf("vhostuser: parse netconf: %w", err)
	}
	bad := func(field, format string, a ...any) error {
		return fmt.Errorf("vhostuser: netconf %q: field %q: %s", c.Name, field, fmt.Sprintf(format, a...))
	}
	if c.CNIVersion != "" && !slices.Contains(version.All.SupportedVersions(), c.CNIVersion) {
		return nil, bad("cniVersion", "%q not supported (want one of %s)", c.CNIVersion, strings.Join(version.All.SupportedVersions(), ", "))
	}
	if err := version.ParsePrevResult(&c.NetConf); err != nil {
		return nil, bad("prevResult", "%v", err)
	}
	if c.IPAM.Type != "" {
		// A vhost-user port has no kernel interface to put an address on.
		return nil, bad("ipam", "%q given, but a vhost-user attachment has no kernel interface to address; configure IPs in the DPDK application", c.IPAM.Type)
	}
	if c.Bridge == "" {
		return nil, bad("bridge", "missing (the OVS-DPDK bridge, datapath_type=netdev, to add the port to)")
	}
	if !bridgeRe.MatchString(c.Bridge) {
		return nil, bad("bridge", "%q is not an OVS bridge name (letters, digits, '_', '-', '.'; at most 15)", c.Bridge)
	}
	if c.VLAN < 0 || c.VLAN > 4094 {
		return nil, bad("vlan", "%d out of range 0-4094 (0: untagged)", c.VLAN)
	}
	if c.MTU != 0 && (c.MTU < 68 || c.MTU > maxMTU) {
		return nil, bad("mtu", "%d out of range 68-%d (0: OVS's default)", c.MTU, maxMTU)
	}
	if c.OVSDB == "" {
		c.OVSDB = DefaultOVSDB
	}
	switch {
	case filepath.IsAbs(c.OVSDB):
		c.OVSDB = "unix:" + filepath.Clean(c.OVSDB)
	case strings.HasPrefix(c.OVSDB, "unix:") && filepath.IsAbs(strings.TrimPrefix(c.OVSDB, "unix:")):
	case strings.HasPrefix(c.OVSDB, "tcp:") || strings.HasPrefix(c.OVSDB, "ssl:"):
		if strings.Count(c.OVSDB, ":") < 2 {
			return nil, bad("ovsdbSocket", "%q: want tcp:<ip>:<port>", c.OVSDB)
		}
	default:
		return nil, bad("ovsdbSocket", "%q: want unix:<absolute path>, an absolute path, or tcp:<ip>:<port>", c.OVSDB)
	}
	if strings.ContainsAny(c.OVSDB, " \t\n,") {
		return nil, bad("ovsdbSocket", "%q: contains spaces or commas", c.OVSDB)
	}
	if c.SocketDir != "" {
		if !filepath.IsAbs(c.SocketDir) {
			return nil, bad("socketDir", "%q: want an absolute host directory", c.SocketDir)
		}
		c.SocketDir = filepath.Clean(c.SocketDir)
	}
	if c.ContainerDir != "" {
		if !filepath.IsAbs(c.ContainerDir) {
			return nil, bad("containerDir", "%q: want an absolute path", c.ContainerDir)
		}
		c.ContainerDir = filepath.Clean(c.ContainerDir)
	}
	if c.SocketName == "" {
		c.SocketName = "sock"
	}
	if strings.Contains(c.SocketName, "/") || c.SocketName == "." || c.SocketName == ".." {
		return nil, bad("socketName", "%q: want a file name", c.SocketName)
	}
	if c.Timeout == 0 {
		c.Timeout = 10
	}
	if c.Timeout < 1 || c.Timeout > 300 {
		return nil, bad("ovsTimeout", "%d out of range 1-300 seconds", c.Timeout)
	}
	switch strings.ToLower(c.LogLevel) {
	case "", "debug", "info", "warning", "warn", "error", "panic":
	default:
		return nil, bad("logLevel", "%q: want debug, info, warning or error", c.LogLevel)
	}
	return c, nil
}

// maxSocketPath is sun_path's 108 bytes less the terminating NUL.
const maxSocketPath = 107

// checkSocketPath refuses a path a unix socket cannot have, naming where it came from.
func checkSocketPath(what, path string) error {
	if len(path) > maxSocketPath {
		return fmt.Errorf("%s %s is %d bytes, over the %d a unix socket allows", what, path, len(path), maxSocketPath)
	}
	if strings.ContainsAny(path, "\x00\n\"") {
		return fmt.Errorf("%s %q: contains a NUL, newline or quote", what, path)
	}
	return nil
}
