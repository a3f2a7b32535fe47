package sriovcni

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/internal/netnsutil"
	"github.com/multinet-io/multinet/internal/pluginlog"
	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/vfmanager"
)

// Args are one CNI invocation's parameters (the CNI_* environment and stdin).
type Args struct {
	ContainerID string
	Netns       string
	IfName      string
	Args        string // CNI_ARGS
	Path        string // CNI_PATH: where the IPAM plugin is looked up
	StdinData   []byte
}

// Plugin runs the CNI commands on one host. The host's network namespace is the caller's
// current one (a daemon's, or the runtime's for the binary).
type Plugin struct {
	// LogDir is the only place the netconf's logFile may be (see logDir): the netconf is a
	// tenant's NAD, and we write as root.
	LogDir   string
	Sys      *pci.SysFS
	StateDir string
	// DevInfo is where the attachment's device-info file goes ("": devinfo.DefaultBase).
	DevInfo devinfo.Dir
	// Log, when set, is used instead of the logger the netconf's logLevel/logFile describe.
	Log *slog.Logger
	// PoolsFile is the device plugin's published pools (package devpools; "": none), and
	// PoolCheck what a VF in none of them gets (PoolCheckAuto when "").
	PoolsFile string
	PoolCheck string
	// Checkpoint is kubelet's device-manager checkpoint ("": not read): a VF kubelet gave
	// another pod is refused.
	Checkpoint string
	// NL, when set, is a netlink handle bound to the host's network namespace, kept for the
	// process's life (the agent opens one at start: every ADD and DEL reads and sets VF
	// settings through it, whatever namespace the calling thread is in); nil: each call opens
	// its own in the caller's namespace.
	NL *netlink.Handle
}

func (p *Plugin) store() store { return store{dir: p.StateDir} }

// logger follows upstream's logLevel/logFile (under the log dir only; see package pluginlog);
// without them only warnings reach stderr, which runtimes keep in their own logs.
func (p *Plugin) logger(c *NetConf) (*slog.Logger, func()) {
	if p.Log != nil {
		return p.Log, func() {}
	}
	o := pluginlog.Options{Plugin: "sriov", LogDir: p.logDir()}
	if c != nil {
		o.Level, o.LogFile = c.LogLevel, c.LogFile
	}
	log, f := pluginlog.New(o)
	if f == nil {
		return log, func() {}
	}
	return log, func() { f.Close() }
}

// vfInfo is what sysfs says about the VF now.
type vfInfo struct {
	addr, pf, pfNetdev string
	index              int
	driver             string
	netdevs            []string
	dpdk               bool
}

func (p *Plugin) inspect(addr string) (*vfInfo, error) {
	d, err := p.Sys.Device(addr)
	if err != nil {
		return nil, fmt.Errorf("sriov: field \"deviceID\": %w", err)
	}
	if d.IsPF() && !d.IsVF() {
		return nil, fmt.Errorf("sriov: field \"deviceID\": %s is an SR-IOV PF (%d VFs), not a VF; give one of its VFs", addr, d.NumVFs)
	}
	if !d.IsVF() {
		return nil, fmt.Errorf("sriov: field \"deviceID\": %s is not an SR-IOV VF (no physfn link)", addr)
	}
	v := &vfInfo{addr: addr, pf: d.PFAddress, index: d.VFIndex, driver: d.Driver, netdevs: d.Netdevs}
	if nds, err := p.Sys.Netdevs(d.PFAddress); err == nil && len(nds) > 0 {
		v.pfNetdev = nds[0]
	}
	switch {
	case len(v.netdevs) > 0:
	case pci.UserspaceDriver(v.driver): // no kernel netdev: DPDK mode
		v.dpdk = true
	case v.driver == "":
		return nil, fmt.Errorf("sriov: vf %s: not bound to any driver", addr)
	default:
		return nil, fmt.Errorf("sriov: vf %s: bound to %s but has no netdev in the host namespace (is it still in another pod's namespace?)", addr, v.driver)
	}
	return v, nil
}

// netnsAlive reports whether path still names a network namespace (see netnsutil.Gone).
func netnsAlive(path string) bool { return !netnsutil.Gone(path) }

// tmpName is the VF netdev's name while it moves between namespaces: derived from the VF
// address (one VF moves at a time under its lock), so it collides neither with the host's
// names nor with the pod's.
func tmpName(vf string) string {
	var h uint32 = 2166136261
	for i := 0; i < len(vf); i++ {
		h = (h ^ uint32(vf[i])) * 16777619
	}
	return fmt.Sprintf("mnvf%08x", h)
}

// pfOp applies or restores admin settings under the PF's host-wide lock: drivers refuse
// concurrent VF configuration on one PF with EBUSY (the upstream "device or resource busy"),
// so changes on a PF are serialized here and a busy answer is retried.
func (p *Plugin) pfOp(pf string, fn func() error) error {
	l, err := p.store().lock("pf-"+pf, "pf "+pf)
	if err != nil {
		return err
	}
	defer l.Unlock()
	return retryBusy(fn, 5, 50*time.Millisecond)
}

// retryBusy runs fn again while it fails with EBUSY or EAGAIN, waiting base, 2*base, ...
func retryBusy(fn func() error, tries int, base time.Duration) error {
	var err error
	for i := 0; i < tries; i++ {
		if err = fn(); err == nil || !(errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EAGAIN)) {
			return err
		}
		time.Sleep(base << i)
	}
	return err
}

// newManager is the VF manager of one call, over NL when the process keeps one, else over a
// handle of the call's own in the caller's namespace (only a handle from NewHandle asks the
// kernel for the PF's VF list).
func (p *Plugin) newManager() (*vfmanager.Manager, func(), error) {
	if p.NL != nil {
		return &vfmanager.Manager{Sys: p.Sys, NL: p.NL}, func() {}, nil
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, nil, fmt.Errorf("sriov: open netlink: %w", err)
	}
	return &vfmanager.Manager{Sys: p.Sys, NL: h}, func() { h.Close() }, nil
}

// readOriginalAdmin saves the VF's admin settings from the PF. A PF that does not report the VF
// (a simulated node's veth, or a driver without VF netlink support) is fine when the netconf
// asks for no admin settings: there is then nothing to restore.
func readOriginalAdmin(log *slog.Logger, m *vfmanager.Manager, c *NetConf, v *vfInfo) (*vfmanager.VFState, error) {
	if v.pfNetdev == "" {
		if c.NeedsPF(v.dpdk) {
			return nil, fmt.Errorf("sriov: vf %s: pf %s has no netdev to apply the VF settings through", v.addr, v.pf)
		}
		log.Warn("pf has no netdev; VF admin settings neither read nor restored", "pf", v.pf)
		return nil, nil
	}
	st, err := m.ReadVF(v.pfNetdev, v.index)
	if err != nil {
		if c.NeedsPF(v.dpdk) || !errors.Is(err, vfmanager.ErrVFNotReported) && c.HasAdminSettings() {
			return nil, fmt.Errorf("sriov: vf %s: read its settings from pf %s: %w", v.addr, v.pfNetdev, err)
		}
		log.Warn("pf does not report the VF; admin settings neither read nor restored", "pf", v.pfNetdev, "index", v.index, "err", err)
		return nil, nil
	}
	return &st, nil
}

// Status reports whether the plugin can serve ADDs: its config parses and its state directory
// is writable.
func (p *Plugin) Status(a Args) error {
	if _, err := loadConfNoDevice(a.StdinData); err != nil {
		return err
	}
	f, err := os.CreateTemp(p.StateDir, ".status-")
	if err != nil {
		if err2 := os.MkdirAll(p.StateDir, 0o700); err2 != nil {
			return fmt.Errorf("sriov: state dir %s: %w", p.StateDir, err2)
		}
		if f, err = os.CreateTemp(p.StateDir, ".status-"); err != nil {
			return fmt.Errorf("sriov: state dir %s not writable: %w", p.StateDir, err)
		}
	}
	f.Close()
	return os.Remove(f.Name())
}

// loadConfNoDevice parses a netconf for STATUS, which the runtime sends without the
// deviceID the meta-plugin adds for one attachment.
func loadConfNoDevice(stdin []byte) (*types.NetConf, error) {
	c := &types.NetConf{}
	if err := json.Unmarshal(stdin, c); err != nil {
		return nil, fmt.Errorf("sriov: parse netconf: %w", err)
	}
	return c, nil
}

// ifaceResult is the result's interface entry for the VF.
func ifaceResult(ifName, mac, sandbox, vf string) *current.Interface {
	return &current.Interface{Name: ifName, Mac: mac, Sandbox: sandbox, PciID: vf}
}

// saveDevInfo writes the attachment's device-info file for the meta-plugin to publish.
func (p *Plugin) saveDevInfo(c *NetConf, a Args, v *vfInfo) (string, error) {
	path := p.DevInfo.CNIPath(c.Name, a.ContainerID, a.IfName)
	info := devinfo.PCI(v.addr, v.pf)
	// On a switchdev PF the VF's representor is the host side of its port (what OVS plugs).
	if rep, err := p.Sys.Representor(v.addr); err == nil {
		info.Pci.RepresentorDevice = rep
	}
	if err := devinfo.Save(path, info); err != nil {
		return "", fmt.Errorf("sriov: vf %s: %w", v.addr, err)
	}
	return path, nil
}
