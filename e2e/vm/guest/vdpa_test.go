//go:build e2e_vm

package guest

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/multinet-io/multinet/pci"
)

// The guest kernel (Debian's 6.12) has no vdpa_sim, but it has VDUSE: a vDPA device whose
// backend is a userspace process. The test is that process, just far enough for the kernel's
// own drivers to bind (it answers every control message "OK" and moves no packets), so that
// pci.Vdpa reads a vDPA device the kernel made: the vdpa bus entry, its driver link, the
// vhost-vdpa char device under vhost_vdpa and the virtio netdev under virtio_vdpa.

// VDUSE uapi (include/uapi/linux/vduse.h).
const (
	vduseNameMax    = 256
	vduseConfigSize = 336 // struct vduse_dev_config without its config[] bytes
	vduseCreateDev  = 1<<30 | vduseConfigSize<<16 | 0x81<<8 | 0x02
	vduseDestroyDev = 1<<30 | vduseNameMax<<16 | 0x81<<8 | 0x03
	vduseVQSetup    = 1<<30 | 32<<16 | 0x81<<8 | 0x14
	vduseMsgSize    = 152 // struct vduse_dev_request and struct vduse_dev_response

	virtioIDNet           = 1
	virtioNetFMAC         = 5
	virtioFVersion1       = 32
	virtioFAccessPlatform = 33
)

func ioctlBuf(t *testing.T, f *os.File, req uintptr, buf []byte) {
	t.Helper()
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), req, uintptr(unsafe.Pointer(&buf[0]))); errno != 0 {
		t.Fatalf("ioctl %#x on %s: %v", req, f.Name(), errno)
	}
}

// vduseNet creates a VDUSE virtio-net device with two queues and answers its control
// messages until the test ends. The vDPA device made from it is added by the caller.
func vduseNet(t *testing.T, name string) {
	t.Helper()
	ctl, err := os.OpenFile("/dev/vduse/control", os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("VDUSE control device (vduse module loaded?): %v", err)
	}
	t.Cleanup(func() { ctl.Close() })
	netCfg := []byte{0x02, 0x00, 0x00, 0x4d, 0x4e, 0x01, 0, 0} // mac 02:00:00:4d:4e:01, status 0
	cfg := make([]byte, vduseConfigSize+len(netCfg))
	copy(cfg, name)
	binary.LittleEndian.PutUint32(cfg[256:], 0)           // vendor_id
	binary.LittleEndian.PutUint32(cfg[260:], virtioIDNet) // device_id
	binary.LittleEndian.PutUint64(cfg[264:], 1<<virtioNetFMAC|1<<virtioFVersion1|1<<virtioFAccessPlatform)
	binary.LittleEndian.PutUint32(cfg[272:], 2)    // vq_num
	binary.LittleEndian.PutUint32(cfg[276:], 4096) // vq_align
	binary.LittleEndian.PutUint32(cfg[332:], uint32(len(netCfg)))
	copy(cfg[vduseConfigSize:], netCfg)
	ioctlBuf(t, ctl, vduseCreateDev, cfg)
	t.Cleanup(func() {
		n := make([]byte, vduseNameMax)
		copy(n, name)
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), vduseDestroyDev, uintptr(unsafe.Pointer(&n[0]))); errno != 0 {
			t.Errorf("destroy VDUSE device %s: %v", name, errno)
		}
	})
	// Non-blocking, so the reader waits in Go's poller and Close ends it: a read blocked in
	// the kernel would hold the file open and the device could not be destroyed.
	dev, err := os.OpenFile("/dev/vduse/"+name, os.O_RDWR|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		vq := make([]byte, 32)
		binary.LittleEndian.PutUint32(vq[0:], uint32(i))
		binary.LittleEndian.PutUint16(vq[4:], 256) // max_size
		ioctlBuf(t, dev, vduseVQSetup, vq)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		req := make([]byte, vduseMsgSize)
		for {
			if _, err := dev.Read(req); err != nil {
				return
			}
			resp := make([]byte, vduseMsgSize)
			copy(resp[0:4], req[4:8]) // request_id; result 0 = VDUSE_REQ_RESULT_OK, vq state 0
			if _, err := dev.Write(resp); err != nil {
				return
			}
		}
	}()
	// Runs before the destroy registered above: the device file must be closed first.
	t.Cleanup(func() {
		dev.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("the VDUSE message reader did not stop when its device file was closed")
		}
	})
}

func waitVdpa(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func rebindVdpa(t *testing.T, name, drv string) {
	t.Helper()
	link := filepath.Join("/sys/bus/vdpa/devices", name, "driver")
	if cur, err := os.Readlink(link); err == nil {
		if filepath.Base(cur) == drv {
			return
		}
		if err := os.WriteFile(filepath.Join("/sys/bus/vdpa/drivers", filepath.Base(cur), "unbind"), []byte(name), 0); err != nil {
			t.Fatalf("unbind %s: %v", name, err)
		}
	}
	if err := os.WriteFile(filepath.Join("/sys/bus/vdpa/drivers", drv, "bind"), []byte(name), 0); err != nil {
		t.Fatalf("bind %s to %s: %v", name, drv, err)
	}
	waitVdpa(t, name+" bound to "+drv, func() bool {
		cur, err := os.Readlink(link)
		return err == nil && filepath.Base(cur) == drv
	})
}

func TestVdpaDeviceOnRealKernel(t *testing.T) {
	inGuest(t)
	const name = "vdpa9"
	vduseNet(t, name)
	if err := netlink.VDPANewDev(name, "", "vduse", netlink.VDPANewDevParams{}); err != nil {
		t.Fatalf("vdpa dev add %s mgmtdev vduse: %v", name, err)
	}
	t.Cleanup(func() {
		if err := netlink.VDPADelDev(name); err != nil {
			t.Errorf("vdpa dev del %s: %v", name, err)
		}
	})
	sys := pci.New("/sys")

	rebindVdpa(t, name, pci.VdpaDriverVhost)
	var d *pci.VdpaDevice
	waitVdpa(t, "the vhost-vdpa char device", func() bool {
		var err error
		d, err = sys.Vdpa(name)
		return err == nil && d.CharDev != ""
	})
	if d.Driver != pci.VdpaDriverVhost || d.Type() != pci.VdpaTypeVhost || d.Parent != "" || d.Netdev != "" {
		t.Errorf("vhost_vdpa: read %+v", d)
	}
	if fi, err := os.Stat(d.CharDev); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Errorf("%s is not a char device the pod could be given: %v", d.CharDev, err)
	}
	t.Logf("vhost_vdpa: %+v", d)

	rebindVdpa(t, name, pci.VdpaDriverVirtio)
	waitVdpa(t, "the virtio netdev", func() bool {
		var err error
		d, err = sys.Vdpa(name)
		return err == nil && d.Netdev != ""
	})
	if d.Driver != pci.VdpaDriverVirtio || d.Type() != pci.VdpaTypeVirtio || d.CharDev != "" {
		t.Errorf("virtio_vdpa: read %+v", d)
	}
	if _, err := netlink.LinkByName(d.Netdev); err != nil {
		t.Errorf("netdev %s the kernel made is not a link: %v", d.Netdev, err)
	}
	t.Logf("virtio_vdpa: %+v", d)
}
