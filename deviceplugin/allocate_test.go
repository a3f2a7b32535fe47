package deviceplugin

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	dp "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/pci/pcitest"
)

// testPools discovers cfg on the fixture and returns its pools by FullName.
func testPools(t *testing.T, cfg string) (*pcitest.Tree, map[string]*pool) {
	t.Helper()
	dinfo := devinfo.Dir(t.TempDir())
	tr, d := fixture(t)
	c := mustParse(t, cfg)
	found, err := d.Discover(c)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*pool{}
	for _, pc := range c.ResourceList {
		p := newPool(pc, d.Sys, dinfo, slog.Default())
		p.set(pc, found[pc.FullName()])
		out[pc.FullName()] = p
	}
	return tr, out
}

func allocate(t *testing.T, p *pool, ids ...string) *dp.ContainerAllocateResponse {
	t.Helper()
	resp, err := p.Allocate(context.Background(), &dp.AllocateRequest{ContainerRequests: []*dp.ContainerAllocateRequest{{DevicesIds: ids}}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.ContainerResponses[0]
}

func devSpecs(r *dp.ContainerAllocateResponse) []string {
	var out []string
	for _, d := range r.Devices {
		if d.HostPath != d.ContainerPath || d.Permissions != "rw" {
			out = append(out, "bad:"+d.HostPath+"->"+d.ContainerPath+":"+d.Permissions)
			continue
		}
		out = append(out, d.HostPath)
	}
	sort.Strings(out)
	return out
}

func TestAllocateNetdevVFs(t *testing.T) {
	_, pools := testPools(t, `{"resourceList":[{"resourceName":"sriov_netdevice","selectors":{"drivers":["iavf"]}}]}`)
	r := allocate(t, pools["intel.com/sriov_netdevice"], vf0(2), vf0(0))
	if got := r.Envs["PCIDEVICE_INTEL_COM_SRIOV_NETDEVICE"]; got != vf0(2)+","+vf0(0) {
		t.Errorf("env = %q", got)
	}
	var info map[string]map[string]map[string]string
	if err := json.Unmarshal([]byte(r.Envs["PCIDEVICE_INTEL_COM_SRIOV_NETDEVICE_INFO"]), &info); err != nil {
		t.Fatalf("_INFO env: %v", err)
	}
	want := map[string]map[string]map[string]string{
		vf0(2): {"generic": {"deviceID": vf0(2)}},
		vf0(0): {"generic": {"deviceID": vf0(0)}},
	}
	if !reflect.DeepEqual(info, want) {
		t.Errorf("_INFO = %v, want %v", info, want)
	}
	if len(r.Devices) != 0 || len(r.Mounts) != 0 {
		t.Errorf("netdev VFs got device specs %v mounts %v", r.Devices, r.Mounts)
	}
	di, err := devinfo.Load(pools["intel.com/sriov_netdevice"].devInfo.DPPath("intel.com/sriov_netdevice", vf0(2)))
	if err != nil || di == nil {
		t.Fatalf("device-info file: %v %v", di, err)
	}
	if di.Type != "pci" || di.Version != "1.1.0" || di.Pci.PciAddress != vf0(2) || di.Pci.PfPciAddress != pf0 {
		t.Errorf("device-info = %+v %+v", di, di.Pci)
	}
	if !strings.HasSuffix(pools["intel.com/sriov_netdevice"].devInfo.DPPath("intel.com/sriov_netdevice", vf0(2)), "/dp/intel.com-sriov_netdevice-0000:3b:01.2-device.json") {
		t.Errorf("device-info path %s", pools["intel.com/sriov_netdevice"].devInfo.DPPath("intel.com/sriov_netdevice", vf0(2)))
	}
}

func TestAllocateVFIOAndNoIOMMU(t *testing.T) {
	tr, pools := testPools(t, `{"resourceList":[{"resourceName":"dpdk","resourcePrefix":"nvidia.com","selectors":{"drivers":["vfio-pci"],"needVhostNet":true}}]}`)
	p := pools["nvidia.com/dpdk"]
	g2, _ := p.sys.VFIODevicePath(vf1(2))
	g3, _ := p.sys.VFIODevicePath(vf1(3))
	if g2 == g3 || !strings.HasPrefix(g2, "/dev/vfio/") {
		t.Fatalf("fixture groups %s %s", g2, g3)
	}
	r := allocate(t, p, vf1(2), vf1(3))
	want := []string{"/dev/net/tun", "/dev/vfio/vfio", "/dev/vhost-net", g2, g3}
	sort.Strings(want)
	if got := devSpecs(r); !reflect.DeepEqual(got, want) {
		t.Errorf("device specs %v, want %v", got, want)
	}
	var info map[string]map[string]map[string]string
	if err := json.Unmarshal([]byte(r.Envs["PCIDEVICE_NVIDIA_COM_DPDK_INFO"]), &info); err != nil {
		t.Fatal(err)
	}
	if v := info[vf1(3)]["vfio"]; v["mount"] != "/dev/vfio/vfio" || v["dev-mount"] != g3 {
		t.Errorf("_INFO vfio of %s = %v", vf1(3), v)
	}
	// needVhostNet's entry has upstream's keys, which DPDK apps parse.
	if v := info[vf1(3)]["vhost"]; len(v) != 2 || v["net-mount"] != "/dev/vhost-net" || v["tun-mount"] != "/dev/net/tun" {
		t.Errorf("_INFO vhost of %s = %v, want net-mount and tun-mount", vf1(3), v)
	}
	di, _ := devinfo.Load(pools["nvidia.com/dpdk"].devInfo.DPPath("nvidia.com/dpdk", vf1(3)))
	if di == nil || di.Pci.Vhostnet != "/dev/vhost-net" || di.Pci.PfPciAddress != pf1 {
		t.Errorf("device-info %+v", di)
	}

	// vfio without an IOMMU: the group's node is noiommu-<N>.
	tr.SetNoIOMMU(vf1(3))
	r = allocate(t, p, vf1(3))
	n := strings.TrimPrefix(g3, "/dev/vfio/")
	want = []string{"/dev/net/tun", "/dev/vfio/noiommu-" + n, "/dev/vfio/vfio", "/dev/vhost-net"}
	if got := devSpecs(r); !reflect.DeepEqual(got, want) {
		t.Errorf("noiommu device specs %v, want %v", got, want)
	}
}

func TestAllocateAdditionalInfo(t *testing.T) {
	_, pools := testPools(t, `{"resourceList":[{"resourceName":"a","selectors":{"drivers":["iavf"]},
	  "additionalInfo":{"*":{"token":"t1","site":"x"},"0000:3b:01.1":{"token":"t2"}}}]}`)
	r := allocate(t, pools["intel.com/a"], vf0(0), vf0(1))
	var info map[string]map[string]map[string]string
	if err := json.Unmarshal([]byte(r.Envs["PCIDEVICE_INTEL_COM_A_INFO"]), &info); err != nil {
		t.Fatal(err)
	}
	if e := info[vf0(0)]["extra"]; e["token"] != "t1" || e["site"] != "x" {
		t.Errorf("%s extra = %v", vf0(0), e)
	}
	if e := info[vf0(1)]["extra"]; e["token"] != "t2" || e["site"] != "x" {
		t.Errorf("%s extra = %v, want its own token over the pool-wide one", vf0(1), e)
	}
}

func TestAllocateUnknownDeviceFails(t *testing.T) {
	_, pools := testPools(t, `{"resourceList":[{"resourceName":"a","selectors":{"drivers":["iavf"]}}]}`)
	_, err := pools["intel.com/a"].Allocate(context.Background(), &dp.AllocateRequest{ContainerRequests: []*dp.ContainerAllocateRequest{{DevicesIds: []string{vf0(0), vf1(2)}}}})
	if err == nil || !strings.Contains(err.Error(), vf1(2)) || !strings.Contains(err.Error(), "intel.com/a") {
		t.Fatalf("err = %v, want one naming the device and the pool", err)
	}
	if di, _ := devinfo.Load(pools["intel.com/a"].devInfo.DPPath("intel.com/a", vf0(0))); di != nil {
		t.Errorf("a failed Allocate left a device-info file")
	}
}

func TestAllocateVhostUserSlots(t *testing.T) {
	dir := t.TempDir()
	_, pools := testPools(t, `{"resourceList":[{"resourceName":"vhost","resourcePrefix":"multinet.io","deviceType":"vhostUser","vhostUser":{"dir":"`+dir+`","count":4,"containerDir":"/var/run/vhu"}}]}`)
	r := allocate(t, pools["multinet.io/vhost"], "vhost-1", "vhost-3")
	if got := r.Envs["VHOSTUSER_MULTINET_IO_VHOST"]; got != "/var/run/vhu/vhost-1/sock,/var/run/vhu/vhost-3/sock" {
		t.Errorf("env = %q", got)
	}
	if len(r.Mounts) != 2 || r.Mounts[1].HostPath != filepath.Join(dir, "vhost-3") || r.Mounts[1].ContainerPath != "/var/run/vhu/vhost-3" || r.Mounts[1].ReadOnly {
		t.Errorf("mounts = %v", r.Mounts)
	}
	if fi, err := os.Stat(filepath.Join(dir, "vhost-3")); err != nil || !fi.IsDir() {
		t.Errorf("slot directory not created: %v", err)
	}
	di, _ := devinfo.Load(pools["multinet.io/vhost"].devInfo.DPPath("multinet.io/vhost", "vhost-3"))
	if di == nil || di.Type != "vhost-user" || di.VhostUser.Mode != "client" || di.VhostUser.Path != filepath.Join(dir, "vhost-3", "sock") {
		t.Errorf("device-info = %+v", di)
	}
}

func TestPreferredAllocation(t *testing.T) {
	_, pools := testPools(t, `{"resourceList":[{"resourceName":"all","selectors":{}}]}`)
	p := pools["intel.com/all"]
	ask := func(avail, must []string, n int) []string {
		resp, err := p.GetPreferredAllocation(context.Background(), &dp.PreferredAllocationRequest{ContainerRequests: []*dp.ContainerPreferredAllocationRequest{{AvailableDeviceIDs: avail, MustIncludeDeviceIDs: must, AllocationSize: int32(n)}}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.ContainerResponses[0].DeviceIDs
	}
	numa0 := []string{vf0(0), vf0(1), vf0(2), vf0(3), pf0b}
	numa1 := []string{vf1(0), vf1(1), vf1(2), vf1(3)}
	all := append(append(append([]string{}, numa1...), numa0...), nic2)

	// Two devices: one NUMA node (the one with more free), one from each PF there.
	got := ask(all, nil, 2)
	if !sameSet(got, []string{vf0(0), pf0b}) {
		t.Errorf("2 of all = %v, want one VF of %s and the idle PF %s (same NUMA, spread over PFs)", got, pf0, pf0b)
	}
	// Must-include on NUMA 1 pulls the rest there.
	got = ask(all, []string{vf1(3)}, 3)
	if len(got) != 3 || got[0] != vf1(3) || !sameSet(got, []string{vf1(3), vf1(0), vf1(1)}) {
		t.Errorf("must %s + 2 = %v, want the rest from NUMA 1", vf1(3), got)
	}
	// More than a node has: fill the best node, then the next.
	got = ask(all, nil, 6)
	if len(got) != 6 || !sameSet(got[:5], numa0) {
		t.Errorf("6 of all = %v, want all of NUMA 0 first", got)
	}
	// Spread across PFs: from NUMA 0 with 4 VFs on pf0 and 1 idle PF, three devices are 2+1.
	got = ask(numa0, nil, 3)
	perPF := map[string]int{}
	for _, id := range got {
		perPF[p.byID[id].PF()]++
	}
	if perPF[pf0] != 2 || perPF[pf0b] != 1 {
		t.Errorf("3 of NUMA 0 = %v (per PF %v), want spread 2+1", got, perPF)
	}
	// Must-include larger than the size is returned whole.
	if got = ask(all, []string{vf0(1), vf1(1)}, 1); !reflect.DeepEqual(got, []string{vf0(1), vf1(1)}) {
		t.Errorf("must-include beyond size = %v", got)
	}
}
