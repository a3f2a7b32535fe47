package pcitest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// Aux describes an auxiliary-bus device under a PCI function, as mlx5 creates them:
// <parent>/mlx5_core.sf.<id> for a subfunction (with sfnum, its netdev and, for RDMA, an
// infiniband/ directory), linked from bus/auxiliary/devices and bound to Driver.
type Aux struct {
	Parent string // PCI address
	Name   string // e.g. mlx5_core.sf.2
	Driver string // e.g. mlx5_core.sf
	SFNum  int    // -1: no sfnum file (not a subfunction)
	Netdev string
	RDMA   string // infiniband device name, "" for none
	ARPHRD int    // netdev type; 0 means 1 (ether)
}

// AddAux adds an auxiliary device.
func (t *Tree) AddAux(a Aux) {
	t.tb.Helper()
	dd := devDir(a.Parent) + "/" + a.Name
	t.mkdir(dd)
	t.mkdir("bus/auxiliary/devices")
	t.mkdir("class/net")
	t.symlink("bus/auxiliary", dd+"/subsystem")
	t.symlink(dd, "bus/auxiliary/devices/"+a.Name)
	if a.Driver != "" {
		drv := "bus/auxiliary/drivers/" + a.Driver
		t.mkdir(drv)
		t.symlink(drv, dd+"/driver")
		t.symlink(dd, drv+"/"+a.Name)
	}
	if a.SFNum >= 0 {
		t.write(dd+"/sfnum", strconv.Itoa(a.SFNum)+"\n")
	}
	if a.Netdev != "" {
		nd := dd + "/net/" + a.Netdev
		t.mkdir(nd)
		typ := a.ARPHRD
		if typ == 0 {
			typ = 1
		}
		t.write(nd+"/type", strconv.Itoa(typ)+"\n")
		t.symlink(nd, "class/net/"+a.Netdev)
	}
	if a.RDMA != "" {
		t.mkdir(dd + "/infiniband/" + a.RDMA)
	}
}

// Vdpa describes a vDPA device on a PCI parent (a VF): <parent>/vdpa<Index>, linked from
// bus/vdpa/devices and bound to vhost_vdpa (a vhost-vdpa-<Index> char device) or virtio_vdpa
// (a virtio<Index> device carrying Netdev).
type Vdpa struct {
	Parent string
	Index  int
	Driver string // "vhost_vdpa", "virtio_vdpa" or "" (unbound)
	Netdev string // virtio_vdpa only
}

// AddVdpa adds a vDPA device.
func (t *Tree) AddVdpa(v Vdpa) {
	t.tb.Helper()
	name := fmt.Sprintf("vdpa%d", v.Index)
	dd := devDir(v.Parent) + "/" + name
	t.mkdir(dd)
	t.mkdir("bus/vdpa/devices")
	t.mkdir("class/vhost-vdpa")
	t.mkdir("class/net")
	t.symlink("bus/vdpa", dd+"/subsystem")
	t.symlink(dd, "bus/vdpa/devices/"+name)
	if v.Driver != "" {
		drv := "bus/vdpa/drivers/" + v.Driver
		t.mkdir(drv)
		t.symlink(drv, dd+"/driver")
		t.symlink(dd, drv+"/"+name)
	}
	switch v.Driver {
	case "vhost_vdpa":
		cd := fmt.Sprintf("%s/vhost-vdpa-%d", dd, v.Index)
		t.mkdir(cd)
		t.write(cd+"/dev", fmt.Sprintf("%d:%d\n", 238, v.Index))
		t.symlink(cd, fmt.Sprintf("class/vhost-vdpa/vhost-vdpa-%d", v.Index))
	case "virtio_vdpa":
		vd := fmt.Sprintf("%s/virtio%d", dd, v.Index)
		t.mkdir(vd)
		t.symlink("bus/virtio", vd+"/subsystem")
		if v.Netdev != "" {
			nd := vd + "/net/" + v.Netdev
			t.mkdir(nd)
			t.write(nd+"/type", "1\n")
			t.symlink(nd, "class/net/"+v.Netdev)
		}
	}
}

// RemoveAux deletes an auxiliary device, as `devlink port del` does for a subfunction.
func (t *Tree) RemoveAux(name string) {
	t.tb.Helper()
	real, err := filepath.EvalSymlinks(t.abs("bus/auxiliary/devices/" + name))
	if err != nil {
		t.tb.Fatalf("pcitest: %v", err)
	}
	if drv, err := os.Readlink(filepath.Join(real, "driver")); err == nil {
		_ = os.Remove(filepath.Join(filepath.Dir(filepath.Join(real, drv)), name))
	}
	_ = os.RemoveAll(real)
	_ = os.Remove(t.abs("bus/auxiliary/devices/" + name))
}

// AddRepresentor adds a switchdev port netdev under the PF, as mlx5/ice in switchdev mode
// publish their representors: <pf>/net/<netdev> with phys_port_name (pf0vf3 for VF 3 of PF 0,
// p0 for the uplink) and the eswitch's phys_switch_id.
func (t *Tree) AddRepresentor(pf, netdev, physPortName, switchID string) {
	t.tb.Helper()
	nd := devDir(pf) + "/net/" + netdev
	t.mkdir(nd)
	t.mkdir("class/net")
	t.write(nd+"/type", "1\n")
	t.write(nd+"/phys_port_name", physPortName+"\n")
	t.write(nd+"/phys_switch_id", switchID+"\n")
	t.symlink(nd, "class/net/"+netdev)
}
