package deviceplugin

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	dp "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/pci"
)

const (
	vfioDriver    = pci.DriverVFIO
	vfioContainer = "/dev/vfio/vfio"
	vhostNetDev   = "/dev/vhost-net"
	tunDev        = "/dev/net/tun"
)

// Allocate answers kubelet for each container: env vars naming the devices, the /dev nodes
// DPDK needs, slot mounts for vhost-user, and a device-info file per device for the CNI side.
func (p *pool) Allocate(_ context.Context, req *dp.AllocateRequest) (*dp.AllocateResponse, error) {
	resp := &dp.AllocateResponse{}
	for _, cr := range req.ContainerRequests {
		r, err := p.allocate(cr.DevicesIds)
		if err != nil {
			p.log.Error("allocate", "devices", cr.DevicesIds, "err", err)
			return nil, err
		}
		resp.ContainerResponses = append(resp.ContainerResponses, r)
	}
	return resp, nil
}

// infoEntry is one device's part of the PCIDEVICE_<..>_INFO env var (upstream's shape).
type infoEntry struct {
	Generic *struct {
		DeviceID string `json:"deviceID"`
	} `json:"generic,omitempty"`
	VFIO *struct {
		Mount    string `json:"mount"`
		DevMount string `json:"dev-mount"`
	} `json:"vfio,omitempty"`
	// Vhost names the two nodes needVhostNet adds, with upstream's keys.
	Vhost *struct {
		NetMount string `json:"net-mount"`
		TunMount string `json:"tun-mount"`
	} `json:"vhost,omitempty"`
	// RDMA names an isRdma member's /dev/infiniband nodes by kind (uverbs, umad, issm, rdma_cm).
	RDMA map[string]string `json:"rdma,omitempty"`
	// Vdpa names a vhost-vdpa member's char device.
	Vdpa *struct {
		Mount string `json:"mount"`
	} `json:"vdpa,omitempty"`
	VhostUser *struct {
		Mode string `json:"mode"`
		Path string `json:"path"`
	} `json:"vhost-user,omitempty"`
	// Extra is the pool's additionalInfo: "*" for every device, merged with the device's own.
	Extra map[string]string `json:"extra,omitempty"`
}

func extraInfo(add map[string]map[string]string, id string) map[string]string {
	if len(add["*"]) == 0 && len(add[id]) == 0 {
		return nil
	}
	out := map[string]string{}
	for k, v := range add["*"] {
		out[k] = v
	}
	for k, v := range add[id] {
		out[k] = v
	}
	return out
}

func (p *pool) allocate(ids []string) (*dp.ContainerAllocateResponse, error) {
	p.mu.Lock()
	cfg := p.cfg
	devs := make([]*Device, 0, len(ids))
	for _, id := range ids {
		d := p.byID[id]
		if d == nil {
			p.mu.Unlock()
			return nil, fmt.Errorf("allocate %s: device %s is not in the pool", cfg.FullName(), id)
		}
		devs = append(devs, d)
	}
	p.mu.Unlock()

	r := &dp.ContainerAllocateResponse{Envs: map[string]string{}}
	info := map[string]*infoEntry{}
	var addrs []string
	seenDev := map[string]bool{}
	addDev := func(path string) {
		if !seenDev[path] {
			seenDev[path] = true
			r.Devices = append(r.Devices, &dp.DeviceSpec{HostPath: path, ContainerPath: path, Permissions: "rw"})
		}
	}
	var files []string
	for _, d := range devs {
		e := &infoEntry{Extra: extraInfo(cfg.AdditionalInfo, d.ID)}
		info[d.ID] = e
		var di *nadv1.DeviceInfo
		if d.Slot != nil {
			// Server-mode sockets are created by the container; client-mode ones by the host
			// side, which needs the directory to exist before the pod starts. Whatever the
			// slot's last pod left in it (files, symlinks out of it) must not reach this one.
			if err := prepareSlot(d.Slot); err != nil {
				return nil, fmt.Errorf("allocate %s: slot %s: %w", cfg.FullName(), d.ID, err)
			}
			r.Mounts = append(r.Mounts, &dp.Mount{HostPath: d.Slot.HostDir, ContainerPath: d.Slot.ContainerDir})
			addrs = append(addrs, d.Slot.ContainerSocket)
			e.VhostUser = &struct {
				Mode string `json:"mode"`
				Path string `json:"path"`
			}{d.Slot.Mode, d.Slot.ContainerSocket}
			di = &nadv1.DeviceInfo{Type: nadv1.DeviceInfoTypeVHostUser, Version: nadv1.DeviceInfoVersion,
				VhostUser: &nadv1.VhostDevice{Mode: d.Slot.Mode, Path: d.Slot.HostSocket}}
		} else if d.Aux != nil {
			// A subfunction is its netdev (moved into the pod by the CNI) and, for RDMA, its
			// own verbs device: no PCI node to mount and no device-info type for it upstream.
			addrs = append(addrs, d.ID)
			e.Generic = &struct {
				DeviceID string `json:"deviceID"`
			}{d.ID}
			continue
		} else {
			addrs = append(addrs, d.ID)
			e.Generic = &struct {
				DeviceID string `json:"deviceID"`
			}{d.ID}
			drv, err := p.sys.Driver(d.ID)
			if err != nil {
				return nil, fmt.Errorf("allocate %s: %w", cfg.FullName(), err)
			}
			if drv == vfioDriver {
				dev, err := p.sys.VFIODevicePath(d.ID)
				if err != nil {
					return nil, fmt.Errorf("allocate %s: %w", cfg.FullName(), err)
				}
				addDev(vfioContainer)
				addDev(dev)
				e.VFIO = &struct {
					Mount    string `json:"mount"`
					DevMount string `json:"dev-mount"`
				}{vfioContainer, dev}
			}
			di = devinfo.PCI(d.ID, d.PCI.PFAddress)
			rep := ""
			if d.PCI.PFAddress != "" {
				// A VF of a switchdev PF: the host side of its port, for OVS and friends.
				if rep, err = p.sys.Representor(d.ID); err != nil {
					p.log.Warn("representor lookup", "device", d.ID, "err", err)
				}
				di.Pci.RepresentorDevice = rep
			}
			if v := d.Vdpa; v != nil {
				if v.CharDev != "" {
					addDev(v.CharDev)
					e.Vdpa = &struct {
						Mount string `json:"mount"`
					}{v.CharDev}
				}
				di = &nadv1.DeviceInfo{Type: nadv1.DeviceInfoTypeVDPA, Version: nadv1.DeviceInfoVersion,
					Vdpa: &nadv1.VdpaDevice{ParentDevice: v.Name, Driver: v.Type(), Path: v.CharDev, PciAddress: d.ID, PfPciAddress: d.PCI.PFAddress, RepresentorDevice: rep}}
			}
			if d.RDMA && di.Pci != nil {
				e.RDMA = map[string]string{}
				for _, node := range p.sys.RDMACharDevices(d.ID) {
					addDev(node)
					e.RDMA[strings.TrimRight(strings.TrimPrefix(node, "/dev/infiniband/"), "0123456789")] = node
				}
				di.Pci.RdmaDevice = p.sys.RDMADevice(d.ID)
			}
			if d.VhostNet && di.Pci != nil {
				addDev(vhostNetDev)
				addDev(tunDev)
				e.Vhost = &struct {
					NetMount string `json:"net-mount"`
					TunMount string `json:"tun-mount"`
				}{vhostNetDev, tunDev}
				di.Pci.Vhostnet = vhostNetDev
			}
		}
		path := p.devInfo.DPPath(cfg.ResourcePrefix+"/"+cfg.ResourceName, d.ID)
		if err := devinfo.Save(path, di); err != nil {
			// Leave no partial set of files behind for a failed Allocate.
			for _, f := range files {
				_ = devinfo.Remove(f)
			}
			return nil, fmt.Errorf("allocate %s: device %s: %w", cfg.FullName(), d.ID, err)
		}
		files = append(files, path)
	}
	env := cfg.EnvName()
	r.Envs[env] = strings.Join(addrs, ",")
	b, err := json.Marshal(info)
	if err != nil {
		return nil, err
	}
	r.Envs[env+"_INFO"] = string(b)

	p.mu.Lock()
	for _, d := range devs {
		if d.PCI != nil && len(d.PCI.Netdevs) > 0 {
			p.inUse[d.ID] = inAllocated
		}
	}
	p.mu.Unlock()
	p.log.Info("allocated", "devices", ids)
	return r, nil
}
