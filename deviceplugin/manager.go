package deviceplugin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	dp "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/devpools"
	"github.com/multinet-io/multinet/pci"
)

// Options configure a Manager.
type Options struct {
	ConfigFile string // config.json; re-read when its content changes
	SysfsRoot  string // "" means /sys
	PluginDir  string // kubelet's device-plugin directory; "" means DefaultPluginDir
	// Interval between looks at sysfs, the config file and kubelet.sock (default 250ms): the
	// bound on how late a health change or a kubelet restart is noticed.
	Interval          time.Duration
	DefaultRouteLinks func() ([]string, error) // nil: the host's default-route links (HostDefaultRouteLinks)
	Logger            *slog.Logger
	// PoolsFile, when set, is where the pools' PCI addresses are published (package devpools)
	// after every change, for the sriov CNI plugin to refuse VFs that are in no pool.
	PoolsFile string
	// DevInfo is where Allocate writes device-info files ("": devinfo.DefaultBase).
	DevInfo devinfo.Dir
	// OnRefused, when set, is called with the refused pools each time a config takes effect
	// whose refusals differ from the last ones reported (an empty list: every pool served). It
	// must not block: the command posts Events on the Node from it.
	OnRefused func([]Refusal)
}

// Manager keeps one pool (and its endpoint) per resource of the config, re-reads the config
// file, rediscovers when the node's devices change, publishes health and re-registers with a
// restarted kubelet.
type Manager struct {
	opts Options
	sys  *pci.SysFS
	disc *Discoverer
	log  *slog.Logger

	applyMu sync.Mutex // one discovery+apply at a time
	mu      sync.Mutex
	cfg     *Config
	tried   []byte // config bytes last tried (good or bad), to act once per change
	cfgErr  error  // why the config file's current content is not in effect
	pools   map[string]*pool
	eps     map[string]*endpoint
	fp      string // device fingerprint of the last discovery
	regErrs map[string]string
	classes map[string]bool // address -> is a network/accelerator function
	// published is what the pools file says now (Updated aside).
	published devpools.File
	// reported is the refusals last passed to OnRefused (nil: none reported yet).
	reported *string
}

// New reads and applies the config once; a bad config or discovery error at start is fatal
// (there is no last good config to keep serving).
func New(o Options) (*Manager, error) {
	if o.PluginDir == "" {
		o.PluginDir = DefaultPluginDir
	}
	if o.Interval <= 0 {
		o.Interval = 250 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	sys := pci.New(o.SysfsRoot)
	m := &Manager{opts: o, sys: sys, log: o.Logger,
		disc:  &Discoverer{Sys: sys, DefaultRouteLinks: o.DefaultRouteLinks},
		pools: map[string]*pool{}, eps: map[string]*endpoint{}, regErrs: map[string]string{}}
	b, err := os.ReadFile(o.ConfigFile)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", o.ConfigFile, err)
	}
	m.tried = b
	// Publish only once the start is good: a device plugin that fails to start must not tell
	// the sriov plugin that the node has no pools.
	m.opts.PoolsFile = ""
	if err := m.applyBytes(b); err != nil {
		return nil, fmt.Errorf("config %s: %w", o.ConfigFile, err)
	}
	if len(m.cfg.ResourceList) == 0 && len(m.cfg.Refused) > 0 {
		// Nothing to serve at all: fail where the operator looks first (the pod's restarts).
		return nil, fmt.Errorf("config %s: every pool refused: %w", o.ConfigFile, m.cfg.Err())
	}
	m.opts.PoolsFile = o.PoolsFile
	if err := m.publishPoolsLocked(); err != nil {
		return nil, err
	}
	return m, nil
}

// Run serves until ctx ends, then stops every endpoint and removes its socket.
func (m *Manager) Run(ctx context.Context) error {
	if err := os.MkdirAll(m.opts.PluginDir, 0o755); err != nil {
		return fmt.Errorf("device-plugin dir: %w", err)
	}
	t := time.NewTicker(m.opts.Interval)
	defer t.Stop()
	for {
		m.tick(ctx)
		select {
		case <-ctx.Done():
			m.mu.Lock()
			for name, e := range m.eps {
				e.stop()
				delete(m.eps, name)
			}
			m.mu.Unlock()
			return nil
		case <-t.C:
		}
	}
}

// tick does one round: config file, device changes, health, endpoints, registration.
func (m *Manager) tick(ctx context.Context) {
	if b, err := os.ReadFile(m.opts.ConfigFile); err == nil {
		m.mu.Lock()
		changed := !bytes.Equal(b, m.tried)
		if changed {
			m.tried = b
		}
		m.mu.Unlock()
		if changed {
			if err := m.applyBytes(b); err != nil {
				m.log.Error("config rejected; still serving the last good config", "file", m.opts.ConfigFile, "err", err)
			} else {
				m.log.Info("config reloaded", "file", m.opts.ConfigFile)
			}
		}
	}
	state, fp := m.look()
	if fp != m.currentFP() {
		if err := m.Rescan(); err != nil {
			m.log.Error("rediscovery failed; keeping the current pools", "err", err)
			// Retry when the devices change again, not every tick.
			m.mu.Lock()
			m.fp = fp
			m.mu.Unlock()
		}
		state = nil // drivers may have changed again since
	}
	m.mu.Lock()
	pools := make([]*pool, 0, len(m.pools))
	for _, p := range m.pools {
		pools = append(pools, p)
	}
	m.mu.Unlock()
	for _, p := range pools {
		p.refreshHealth(state)
	}
	m.syncEndpoints(ctx)
}

func (m *Manager) currentFP() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fp
}

// Reload re-reads the config file now; on error the last good config stays in effect.
func (m *Manager) Reload() error {
	b, err := os.ReadFile(m.opts.ConfigFile)
	if err != nil {
		return fmt.Errorf("config %s: %w", m.opts.ConfigFile, err)
	}
	m.mu.Lock()
	m.tried = b
	m.mu.Unlock()
	if err := m.applyBytes(b); err != nil {
		return fmt.Errorf("config %s: %w", m.opts.ConfigFile, err)
	}
	return nil
}

// ConfigError is why the config file's current content is not in effect (nil when it is): the
// whole file's error, or the pools of it that are refused.
func (m *Manager) ConfigError() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cfgErr == nil && m.cfg != nil {
		return m.cfg.Err()
	}
	return m.cfgErr
}

// Refused lists the pools of the config in effect that are not served as written, with why.
func (m *Manager) Refused() []Refusal {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cfg == nil {
		return nil
	}
	return append([]Refusal(nil), m.cfg.Refused...)
}

// keepLastGood puts back, for a pool the new file refuses, the version of it in effect now:
// a typo in one pool's edit must not take that pool's devices away from new pods either.
func (m *Manager) keepLastGood(cfg *Config) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cfg == nil {
		return
	}
	for _, r := range cfg.Refused {
		if m.poolServed(cfg, r.Resource) {
			continue
		}
		for _, old := range m.cfg.ResourceList {
			if old.FullName() == r.Resource {
				cfg.ResourceList = append(cfg.ResourceList, old)
			}
		}
	}
}

func (m *Manager) poolServed(cfg *Config, resource string) bool {
	for _, p := range cfg.ResourceList {
		if p.FullName() == resource {
			return true
		}
	}
	return false
}

// Rescan rediscovers devices with the config in effect.
func (m *Manager) Rescan() error {
	m.mu.Lock()
	cfg := m.cfg
	m.mu.Unlock()
	return m.apply(cfg)
}

func (m *Manager) applyBytes(b []byte) error {
	cfg, err := Parse(b)
	if err == nil {
		for _, w := range cfg.Warnings {
			m.log.Warn("config", "file", m.opts.ConfigFile, "warning", w)
		}
		m.keepLastGood(cfg)
		for _, r := range cfg.Refused {
			m.log.Error("pool refused: not served, the other pools are", "file", m.opts.ConfigFile, "index", r.Index,
				"resource", r.Resource, "reason", r.Reason, "serving-last-good", m.poolServed(cfg, r.Resource))
		}
		err = m.apply(cfg)
	}
	m.mu.Lock()
	m.cfgErr = err
	var report []Refusal
	notify := false
	if err == nil && m.opts.OnRefused != nil {
		key := fmt.Sprint(cfg.Refused)
		if m.reported == nil || *m.reported != key {
			m.reported, report, notify = &key, append([]Refusal(nil), cfg.Refused...), true
		}
	}
	m.mu.Unlock()
	if notify {
		m.opts.OnRefused(report)
	}
	return err
}

// apply discovers with cfg and, only if that succeeds, makes it the config in effect.
func (m *Manager) apply(cfg *Config) error {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	fp := m.fingerprint()
	found, err := m.disc.Discover(cfg)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	want := map[string]Pool{}
	for _, p := range cfg.ResourceList {
		want[p.FullName()] = p
	}
	for name, p := range m.pools {
		if _, ok := want[name]; ok {
			continue
		}
		m.removePoolLocked(name, p)
	}
	claimed := map[string]bool{}
	for _, devs := range found {
		for _, d := range devs {
			claimed[d.ID] = true
		}
	}
	for name, pc := range want {
		devs := found[name]
		p := m.pools[name]
		if p == nil {
			p = newPool(pc, m.sys, m.opts.DevInfo, m.log)
			m.pools[name] = p
			m.log.Info("pool added", "resource", name, "devices", ids(devs))
		} else if reflect.DeepEqual(p.config(), pc) {
			// Same selectors: whatever left the pool did so because the device changed.
			devs = m.keepMissing(p, devs, claimed)
		}
		if pc.DeviceType == TypeVhostUser {
			for _, d := range devs {
				if err := os.MkdirAll(d.Slot.HostDir, 0o755); err != nil {
					m.log.Error("vhost-user slot directory", "resource", name, "dir", d.Slot.HostDir, "err", err)
				}
			}
		}
		p.set(pc, devs)
	}
	m.cfg = cfg
	m.fp = fp
	return m.publishPoolsLocked()
}

// publishPoolsLocked writes the pools' PCI members to the pools file, when one is set and
// its content changed.
func (m *Manager) publishPoolsLocked() error {
	if m.opts.PoolsFile == "" {
		return nil
	}
	pools := map[string][]string{}
	var vhost map[string]devpools.VhostPool
	for name, p := range m.pools {
		if v := p.config().VhostUser; v != nil {
			if vhost == nil {
				vhost = map[string]devpools.VhostPool{}
			}
			vhost[name] = devpools.VhostPool{Dir: v.Dir, ContainerDir: v.ContainerDir}
		}
		addrs := []string{}
		for _, d := range p.members() {
			if d.PCI != nil {
				addrs = append(addrs, d.ID)
			}
		}
		pools[name] = addrs
	}
	f := devpools.File{Pools: pools, VhostUser: vhost}
	if reflect.DeepEqual(f, m.published) {
		return nil
	}
	if err := devpools.WriteFile(m.opts.PoolsFile, f); err != nil {
		return err
	}
	m.published = f
	return nil
}

// keepMissing carries over members that the new discovery no longer selects but that are still
// on the bus and not taken by another pool: typically a VF whose driver changed. They stay
// (unhealthy, against their old baseline) so kubelet sees a failure rather than a silent drop,
// and heal when the device is put back. A member still selected keeps its baseline netdevs if
// they are missing now (in a pod, or vanished: health decides).
func (m *Manager) keepMissing(p *pool, devs []*Device, claimed map[string]bool) []*Device {
	byID := map[string]*Device{}
	for _, d := range devs {
		byID[d.ID] = d
	}
	for _, old := range p.members() {
		if old.PCI == nil {
			continue
		}
		if nd := byID[old.ID]; nd != nil {
			if len(nd.PCI.Netdevs) == 0 && nd.PCI.Driver == old.PCI.Driver && len(old.PCI.Netdevs) > 0 {
				nd.PCI.Netdevs, nd.PCI.Netdev = old.PCI.Netdevs, old.PCI.Netdev
			}
			continue
		}
		if claimed[old.ID] || !m.sys.Exists(old.ID) {
			continue
		}
		devs = append(devs, old)
	}
	return devs
}

// removePoolLocked tells kubelet the pool is empty, then closes its endpoint and removes the
// socket: an empty list drops the node's capacity and allocatable to zero at once, where a
// vanished endpoint alone would leave the capacity for kubelet's grace period.
func (m *Manager) removePoolLocked(name string, p *pool) {
	cfg := p.config()
	p.set(cfg, nil)
	if e := m.eps[name]; e != nil {
		p.waitSent(2 * time.Second)
		e.stop()
		delete(m.eps, name)
	}
	if cfg.DeviceType == TypeVhostUser {
		for _, d := range vhostSlots(&cfg) {
			_ = os.Remove(d.Slot.HostDir) // only if empty: a running pod may still use it
		}
	}
	delete(m.pools, name)
	m.log.Info("pool removed", "resource", name)
}

// syncEndpoints (re)starts endpoints whose socket is gone and registers those kubelet has not
// seen, each time kubelet.sock is new. The registration calls (up to 5 s each on a slow
// kubelet) run without the manager's lock: Allocate, reloads and status calls go on meanwhile.
func (m *Manager) syncEndpoints(ctx context.Context) {
	kid := kubeletID(m.opts.PluginDir)
	for name, e := range m.endpointsToRegister(kid) {
		err := e.register(ctx, m.opts.PluginDir)
		m.mu.Lock()
		switch {
		case m.eps[name] != e:
			// Replaced or stopped while registering: the next tick registers what is there.
		case err != nil:
			m.logRegErr(name, err)
		default:
			delete(m.regErrs, name)
			e.kubelet = kid
			m.log.Info("registered with kubelet", "resource", name, "endpoint", e.path)
		}
		m.mu.Unlock()
	}
}

// endpointsToRegister (re)starts the endpoints whose socket is gone and returns those kubelet
// kid has not registered yet.
func (m *Manager) endpointsToRegister(kid string) map[string]*endpoint {
	m.mu.Lock()
	defer m.mu.Unlock()
	todo := map[string]*endpoint{}
	for name, p := range m.pools {
		e := m.eps[name]
		if e != nil && !e.alive() {
			m.log.Info("endpoint socket removed (kubelet restarted?); restarting it", "resource", name, "socket", e.path)
			e.stop()
			e = nil
		}
		if e == nil {
			var err error
			if e, err = startEndpoint(p, m.opts.PluginDir); err != nil {
				m.logRegErr(name, err)
				delete(m.eps, name)
				continue
			}
			m.eps[name] = e
		}
		if kid == "" || e.kubelet == kid {
			continue
		}
		todo[name] = e
	}
	return todo
}

func (m *Manager) logRegErr(name string, err error) {
	if m.regErrs[name] != err.Error() {
		m.regErrs[name] = err.Error()
		m.log.Error("endpoint", "resource", name, "err", err)
	}
}

// look reads which network/accelerator functions exist and their drivers, once per tick. Its
// fingerprint changes when VFs are created or removed or rebound: pools must be rediscovered.
// The PCI class of an address is read once and remembered (it never changes).
func (m *Manager) look() (*nodeState, string) {
	n := newNodeState(m.sys)
	dir := m.sys.DevicesDir()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return n, "error: " + err.Error()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.classes == nil {
		m.classes = map[string]bool{}
	}
	seen := make(map[string]bool, len(entries))
	var sb strings.Builder
	for _, e := range entries {
		a := e.Name()
		seen[a] = true
		want, known := m.classes[a]
		if !known {
			class, err := os.ReadFile(filepath.Join(dir, a, "class"))
			want = err == nil && (bytes.HasPrefix(class, []byte("0x02")) || bytes.HasPrefix(class, []byte("0x12")))
			m.classes[a] = want
		}
		if !want {
			continue
		}
		drv, _ := os.Readlink(filepath.Join(dir, a, "driver"))
		if drv != "" {
			drv = filepath.Base(drv)
		}
		n.drivers[a] = drv
		sb.WriteString(a)
		sb.WriteByte('=')
		sb.WriteString(drv)
		sb.WriteByte(';')
	}
	for a := range m.classes {
		if !seen[a] {
			delete(m.classes, a) // the address may come back as another function
		}
	}
	// Subfunctions and vDPA devices come and go without any PCI change.
	for _, bus := range []string{"auxiliary", "vdpa"} {
		devs, _ := os.ReadDir(filepath.Join(m.sys.Root, "bus", bus, "devices"))
		for _, e := range devs {
			drv, _ := os.Readlink(filepath.Join(m.sys.Root, "bus", bus, "devices", e.Name(), "driver"))
			fmt.Fprintf(&sb, "%s:%s=%s;", bus, e.Name(), filepath.Base(drv))
		}
	}
	return n, sb.String()
}

// fingerprint is look's change detector alone.
func (m *Manager) fingerprint() string {
	_, fp := m.look()
	return fp
}

// PoolStatus is a pool as kubelet sees it, for tools and tests.
type PoolStatus struct {
	Resource  string
	Devices   []string          // sorted
	Unhealthy map[string]string // device -> reason
}

// Status returns every pool's members and health, sorted by resource.
func (m *Manager) Status() []PoolStatus {
	m.mu.Lock()
	pools := make([]*pool, 0, len(m.pools))
	for _, p := range m.pools {
		pools = append(pools, p)
	}
	m.mu.Unlock()
	var out []PoolStatus
	for _, p := range pools {
		p.mu.Lock()
		st := PoolStatus{Resource: p.cfg.FullName(), Unhealthy: map[string]string{}}
		for _, d := range p.devices {
			st.Devices = append(st.Devices, d.ID)
		}
		for id, why := range p.health {
			st.Unhealthy[id] = why
		}
		p.mu.Unlock()
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Resource < out[j].Resource })
	return out
}

func ids(devs []*Device) []string {
	out := make([]string, len(devs))
	for i, d := range devs {
		out[i] = d.ID
	}
	return out
}

// ErrNoPool is returned (wrapped) by Server for a resource the config in effect lacks.
var ErrNoPool = errors.New("no such pool")

// Server returns the gRPC service of a pool ("intel.com/sriov_netdevice"), for a host process
// that wants to call Allocate or GetPreferredAllocation in-process rather than over the socket.
func (m *Manager) Server(resource string) (dp.DevicePluginServer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p := m.pools[resource]; p != nil {
		return p, nil
	}
	return nil, fmt.Errorf("resource %s: %w", resource, ErrNoPool)
}
