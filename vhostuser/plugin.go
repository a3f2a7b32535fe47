package vhostuser

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"

	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/devpools"
	"github.com/multinet-io/multinet/internal/netnsutil"
	"github.com/multinet-io/multinet/internal/pluginlog"
)

// DefaultLogDir is where a netconf's logFile may be when the binary is given no other.
const DefaultLogDir = "/var/log/multinet"

// EnvOVSVsctl names the ovs-vsctl binary to run (default: ovs-vsctl from PATH).
const EnvOVSVsctl = "MULTINET_OVS_VSCTL"

// External IDs the plugin sets on its ports, so an operator (and CHECK) can tell whose a port is.
const (
	idContainer = "multinet-container-id"
	idIfName    = "multinet-ifname"
	idSlot      = "multinet-slot"
	idNetwork   = "multinet-network"
)

// Args are one CNI invocation's parameters.
type Args struct {
	ContainerID string
	Netns       string
	IfName      string
	Args        string
	StdinData   []byte
}

// Plugin runs the CNI commands on one host.
type Plugin struct {
	StateDir string
	// DevInfo is the device-info root: the device plugin's files for slots, and ours for
	// attachments ("": devinfo.DefaultBase).
	DevInfo devinfo.Dir
	// PoolsFile is the device plugin's published pools (package devpools; "": none): where
	// the pod sees a slot when the netconf does not say (its pool's containerDir).
	PoolsFile string
	OVSVsctl  string // empty: ovs-vsctl from PATH
	// LogDir is the only place the netconf's logFile may be (DefaultLogDir when "").
	LogDir string
	Log    *slog.Logger
}

func (p *Plugin) store() store { return store{dir: p.StateDir} }

func (p *Plugin) ovs(c *NetConf) (*ovs, error) {
	o, err := newOVS(p.OVSVsctl, c.OVSDB, time.Duration(c.Timeout)*time.Second)
	if err != nil {
		return nil, fmt.Errorf("vhostuser: %w", err)
	}
	return o, nil
}

// logger follows the netconf's logLevel/logFile, the file under LogDir only (see package
// pluginlog): the netconf is a tenant's NAD, and the plugin writes as root.
func (p *Plugin) logger(c *NetConf) (*slog.Logger, func()) {
	if p.Log != nil {
		return p.Log, func() {}
	}
	o := pluginlog.Options{Plugin: "vhostuser", LogDir: p.LogDir}
	if o.LogDir == "" {
		o.LogDir = DefaultLogDir
	}
	if c != nil {
		o.Level, o.LogFile = c.LogLevel, c.LogFile
	}
	log, f := pluginlog.New(o)
	if f == nil {
		return log, func() {}
	}
	return log, func() { f.Close() }
}

// resolveSlot finds the slot's host socket: under the netconf's socketDir, or from the device
// plugin's device-info file for the slot (which also says the slot's mode).
func (p *Plugin) resolveSlot(c *NetConf) (Slot, error) {
	s := Slot{ID: c.DeviceID}
	mode := ""
	if c.SocketDir != "" {
		s.HostSocket = filepath.Join(c.SocketDir, c.DeviceID, c.SocketName)
	} else {
		pattern := filepath.Join(p.DevInfo.Root(), "dp", "*-"+c.DeviceID+"-device.json")
		files, _ := filepath.Glob(pattern)
		var found []string
		for _, f := range files {
			info, err := devinfo.Load(f)
			if err != nil || info == nil || info.Type != nadv1.DeviceInfoTypeVHostUser || info.VhostUser == nil {
				continue
			}
			if filepath.Base(filepath.Dir(info.VhostUser.Path)) != c.DeviceID {
				continue
			}
			s.HostSocket, mode = info.VhostUser.Path, info.VhostUser.Mode
			found = append(found, f)
		}
		switch len(found) {
		case 0:
			return s, fmt.Errorf("vhostuser: slot %s: no vhost-user device-info from the device plugin (%s) and no \"socketDir\" in the netconf", c.DeviceID, pattern)
		case 1:
		default:
			return s, fmt.Errorf("vhostuser: slot %s: several pools have a slot of that name (%s); set \"socketDir\" in the netconf", c.DeviceID, strings.Join(found, ", "))
		}
		if !filepath.IsAbs(s.HostSocket) {
			return s, fmt.Errorf("vhostuser: slot %s: device-info socket path %q is not absolute", c.DeviceID, s.HostSocket)
		}
	}
	if mode != "" && mode != ModeServer {
		return s, fmt.Errorf("vhostuser: slot %s: the pool's mode is %q (the pod connects to a socket the host creates), but an OVS dpdkvhostuserclient port needs the pod to listen: set the pool's vhostUser.mode to %q", c.DeviceID, mode, ModeServer)
	}
	// The pod sees the pool directory at containerDir: the netconf's, else the pool's as the
	// device plugin publishes it, else the same path.
	poolDir := filepath.Dir(filepath.Dir(s.HostSocket))
	ctrDir := c.ContainerDir
	if ctrDir == "" && p.PoolsFile != "" {
		if f, err := devpools.Read(p.PoolsFile); err == nil {
			if v, ok := f.VhostPoolAt(poolDir); ok {
				ctrDir = v.ContainerDir
			}
		}
	}
	if ctrDir == "" {
		ctrDir = poolDir
	}
	s.ContainerSocket = filepath.Join(ctrDir, c.DeviceID, filepath.Base(s.HostSocket))
	if err := checkSocketPath("vhostuser: slot "+c.DeviceID+": host socket", s.HostSocket); err != nil {
		return s, err
	}
	if err := checkSocketPath("vhostuser: slot "+c.DeviceID+": pod's socket", s.ContainerSocket); err != nil {
		return s, err
	}
	return s, nil
}

// removeStaleSocket deletes a socket file left in the slot: a server-mode application fails to
// bind over one. Anything but a socket there is refused rather than deleted.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket (%s); not removing it", path, fi.Mode().Type())
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// netnsAlive reports whether path still names a network namespace (see netnsutil.Gone).
func netnsAlive(path string) bool { return !netnsutil.Gone(path) }

func (c *Cache) wantPort(conf *NetConf) Port {
	return Port{Name: c.Port, Bridge: conf.Bridge, ServerPath: c.Slot.HostSocket, VLAN: conf.VLAN, MTU: conf.MTU,
		IDs: map[string]string{idContainer: c.ContainerID, idIfName: c.IfName, idSlot: c.Slot.ID, idNetwork: c.Network}}
}

func devInfo(s Slot) *nadv1.DeviceInfo {
	return &nadv1.DeviceInfo{Type: nadv1.DeviceInfoTypeVHostUser, Version: nadv1.DeviceInfoVersion,
		VhostUser: &nadv1.VhostDevice{Mode: ModeServer, Path: s.ContainerSocket}}
}

func result(c *Cache, conf *NetConf) *current.Result {
	return &current.Result{CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: c.IfName, Sandbox: c.Netns, SocketPath: c.Slot.ContainerSocket}}}
}

// Status reports whether the plugin can serve ADDs: the netconf parses, OVSDB answers and the
// bridge exists.
func (p *Plugin) Status(a Args) error {
	c, err := parse(a.StdinData)
	if err != nil {
		return err
	}
	o, err := p.ovs(c)
	if err != nil {
		return err
	}
	ok, err := o.bridgeExists(c.Bridge)
	if err != nil {
		return fmt.Errorf("vhostuser: %w", err)
	}
	if !ok {
		return fmt.Errorf("vhostuser: bridge %s: not found in OVSDB %s", c.Bridge, c.OVSDB)
	}
	return nil
}
