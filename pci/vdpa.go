package pci

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
)

// vDPA bus drivers and the vdpaType names selectors use for them.
const (
	VdpaDriverVhost  = "vhost_vdpa"
	VdpaDriverVirtio = "virtio_vdpa"
	VdpaTypeVhost    = "vhost"
	VdpaTypeVirtio   = "virtio"
)

// VdpaDevice is a device on the vdpa bus (/sys/bus/vdpa/devices/vdpa<N>). Bound to vhost_vdpa it
// has a vhost-vdpa-<M> char device; bound to virtio_vdpa a virtio<M> device with a netdev.
type VdpaDevice struct {
	Name    string `json:"name"`
	Parent  string `json:"parent"` // PCI address of the parent (a VF), "" for a software parent
	Driver  string `json:"driver"`
	CharDev string `json:"charDev,omitempty"` // /dev/vhost-vdpa-<M>
	Netdev  string `json:"netdev,omitempty"`
}

// Type is the device's vdpaType: "vhost", "virtio", or "" when bound to neither driver.
func (d *VdpaDevice) Type() string {
	switch d.Driver {
	case VdpaDriverVhost:
		return VdpaTypeVhost
	case VdpaDriverVirtio:
		return VdpaTypeVirtio
	}
	return ""
}

var (
	vdpaNameRe  = regexp.MustCompile(`^vdpa\d+$`)
	vhostVdpaRe = regexp.MustCompile(`^vhost-vdpa-\d+$`)
	virtioRe    = regexp.MustCompile(`^virtio\d+$`)
)

// VdpaDevices lists the vDPA devices whose parent is the PCI function, sorted by name.
func (s *SysFS) VdpaDevices(pciAddr string) ([]VdpaDevice, error) {
	entries, err := os.ReadDir(s.devPath(pciAddr))
	if err != nil {
		return nil, fmt.Errorf("pci %s: %w", pciAddr, err)
	}
	var out []VdpaDevice
	for _, e := range entries {
		if !vdpaNameRe.MatchString(e.Name()) {
			continue
		}
		d, err := s.Vdpa(e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, *d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Vdpa reads one vDPA device by name.
func (s *SysFS) Vdpa(name string) (*VdpaDevice, error) {
	dir := s.path("bus", "vdpa", "devices", name)
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("vdpa device %s: %w", name, err)
	}
	d := &VdpaDevice{Name: name}
	if p := filepath.Base(filepath.Dir(real)); ValidAddress(p) {
		d.Parent = p
	}
	if d.Driver, err = linkBase(filepath.Join(dir, "driver")); err != nil {
		return nil, fmt.Errorf("vdpa device %s: read driver link: %w", name, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("vdpa device %s: %w", name, err)
	}
	for _, e := range entries {
		switch {
		case vhostVdpaRe.MatchString(e.Name()):
			d.CharDev = "/dev/" + e.Name()
		case virtioRe.MatchString(e.Name()):
			if nds, err := os.ReadDir(filepath.Join(dir, e.Name(), "net")); err == nil && len(nds) > 0 {
				d.Netdev = nds[0].Name()
			}
		}
	}
	return d, nil
}
