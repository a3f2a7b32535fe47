package deviceplugin

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"time"

	dp "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/pci"
)

// pool is one resource's live state: its config, members and their health. It implements the
// DevicePlugin gRPC service; the endpoint that serves it may be restarted (kubelet restarts
// wipe the sockets) while the pool lives on.
type pool struct {
	dp.UnimplementedDevicePluginServer

	sys *pci.SysFS
	// devInfo is where Allocate writes the devices' device-info files.
	devInfo devinfo.Dir
	log     *slog.Logger

	mu      sync.Mutex
	cfg     Pool
	devices []*Device // sorted by ID
	byID    map[string]*Device
	health  map[string]string // ID -> why unhealthy; absent: healthy
	// inUse marks allocated netdev devices: inAllocated until their netdev leaves the host (a
	// CNI moved it into the pod), then inPod until it comes back (the pod gave it back).
	inUse    map[string]int
	version  uint64
	changed  chan struct{} // closed and replaced on every change
	streams  int
	lastSent uint64
}

func newPool(cfg Pool, sys *pci.SysFS, devInfo devinfo.Dir, log *slog.Logger) *pool {
	return &pool{cfg: cfg, sys: sys, devInfo: devInfo, log: log.With("resource", cfg.FullName()),
		byID: map[string]*Device{}, health: map[string]string{}, inUse: map[string]int{}, changed: make(chan struct{})}
}

func (p *pool) bumpLocked() {
	p.version++
	close(p.changed)
	p.changed = make(chan struct{})
}

const (
	inAllocated = 1
	inPod       = 2
)

// config returns the pool's current config.
func (p *pool) config() Pool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg
}

// set replaces config and members; health is recomputed right away so the first list kubelet
// sees is already true.
func (p *pool) set(cfg Pool, devs []*Device) {
	sort.Slice(devs, func(i, j int) bool { return devs[i].ID < devs[j].ID })
	p.mu.Lock()
	p.cfg = cfg
	p.devices = devs
	p.byID = make(map[string]*Device, len(devs))
	for _, d := range devs {
		p.byID[d.ID] = d
	}
	for id := range p.inUse {
		if p.byID[id] == nil {
			delete(p.inUse, id)
		}
	}
	p.health = map[string]string{}
	p.bumpLocked()
	p.mu.Unlock()
	p.refreshHealth(nil)
}

// members returns the devices (shared, read-only).
func (p *pool) members() []*Device {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.devices
}

// refreshHealth re-reads sysfs for every member and publishes a new list when any changed;
// n is this tick's look at the node (nil: read afresh).
func (p *pool) refreshHealth(n *nodeState) {
	if n == nil {
		n = newNodeState(p.sys)
	}
	p.mu.Lock()
	devs := p.devices
	inUse := make(map[string]int, len(p.inUse))
	for k, v := range p.inUse {
		inUse[k] = v
	}
	p.mu.Unlock()

	next := map[string]string{}
	phase := map[string]int{}
	for _, d := range devs {
		if why := checkHealth(n, d, inUse[d.ID] != 0); why != "" {
			next[d.ID] = why
		}
		if inUse[d.ID] != 0 {
			now, _ := p.sys.Netdevs(d.ID)
			home := len(now) > 0
			switch {
			case !home:
				phase[d.ID] = inPod
			case inUse[d.ID] == inPod:
				phase[d.ID] = 0 // given back
			}
		}
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	for id, ph := range phase {
		if p.inUse[id] == 0 {
			continue // a set() in between dropped it
		}
		if ph == 0 {
			delete(p.inUse, id)
		} else {
			p.inUse[id] = ph
		}
	}
	changed := false
	for id, why := range next {
		if p.health[id] == "" {
			p.log.Warn("device unhealthy", "device", id, "reason", why)
			changed = true
		}
	}
	for id := range p.health {
		if next[id] == "" {
			p.log.Info("device healthy again", "device", id)
			changed = true
		}
	}
	p.health = next
	if changed {
		p.bumpLocked()
	}
}

// list builds the ListAndWatch response and the change channel to wait on after sending it.
func (p *pool) list() (*dp.ListAndWatchResponse, uint64, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	resp := &dp.ListAndWatchResponse{Devices: make([]*dp.Device, 0, len(p.devices))}
	for _, d := range p.devices {
		h := dp.Healthy
		if p.health[d.ID] != "" {
			h = dp.Unhealthy
		}
		dev := &dp.Device{ID: d.ID, Health: h}
		if n := d.NUMANode(); n >= 0 && !p.cfg.ExcludeTopology {
			dev.Topology = &dp.TopologyInfo{Nodes: []*dp.NUMANode{{ID: int64(n)}}}
		}
		resp.Devices = append(resp.Devices, dev)
	}
	return resp, p.version, p.changed
}

// GetDevicePluginOptions tells kubelet we rank devices (GetPreferredAllocation).
func (p *pool) GetDevicePluginOptions(context.Context, *dp.Empty) (*dp.DevicePluginOptions, error) {
	return &dp.DevicePluginOptions{GetPreferredAllocationAvailable: true}, nil
}

// ListAndWatch sends the list, then a new one on every change, until kubelet goes away.
func (p *pool) ListAndWatch(_ *dp.Empty, s dp.DevicePlugin_ListAndWatchServer) error {
	p.mu.Lock()
	p.streams++
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.streams--
		p.mu.Unlock()
	}()
	for {
		resp, ver, changed := p.list()
		if err := s.Send(resp); err != nil {
			return err
		}
		p.mu.Lock()
		if ver > p.lastSent {
			p.lastSent = ver
		}
		p.mu.Unlock()
		select {
		case <-changed:
		case <-s.Context().Done():
			return nil
		}
	}
}

// waitSent waits until a ListAndWatch stream has sent the current list (or none is open).
func (p *pool) waitSent(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		done := p.streams == 0 || p.lastSent >= p.version
		p.mu.Unlock()
		if done {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// PreStartContainer has nothing to do: Allocate prepared everything.
func (p *pool) PreStartContainer(context.Context, *dp.PreStartContainerRequest) (*dp.PreStartContainerResponse, error) {
	return &dp.PreStartContainerResponse{}, nil
}

// GetPreferredAllocation ranks devices: see prefer.
func (p *pool) GetPreferredAllocation(_ context.Context, req *dp.PreferredAllocationRequest) (*dp.PreferredAllocationResponse, error) {
	p.mu.Lock()
	byID := p.byID
	p.mu.Unlock()
	resp := &dp.PreferredAllocationResponse{}
	for _, cr := range req.ContainerRequests {
		ids := prefer(byID, cr.AvailableDeviceIDs, cr.MustIncludeDeviceIDs, int(cr.AllocationSize))
		resp.ContainerResponses = append(resp.ContainerResponses, &dp.ContainerPreferredAllocationResponse{DeviceIDs: ids})
	}
	return resp, nil
}
