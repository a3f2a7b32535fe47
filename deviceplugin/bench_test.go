package deviceplugin

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	dp "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/pci/pcitest"
)

// bigNode is 8 PFs x 128 VFs (1024 VFs), half of each PF's VFs on vfio-pci.
func bigNode(b *testing.B) *pcitest.Tree {
	tr := pcitest.New(b)
	for p := 0; p < 8; p++ {
		pf := fmt.Sprintf("0000:%02x:00.0", 0x10+p)
		tr.AddPF(pcitest.PF{Address: pf, Vendor: "8086", Device: "1593", Driver: "ice", Netdev: fmt.Sprintf("ens%df0", p), TotalVFs: 128, NUMANode: p / 4})
		for i := 0; i < 128; i++ {
			v := pcitest.VF{PF: pf, Index: i, Address: fmt.Sprintf("0000:%02x:%02x.%d", 0x10+p, 1+i/8, i%8), Vendor: "8086", Device: "1889", Driver: "iavf", Netdev: fmt.Sprintf("ens%df0v%d", p, i)}
			if i >= 64 {
				v.DefaultDriver, v.Driver = "iavf", "vfio-pci"
			}
			tr.AddVF(v)
		}
	}
	return tr
}

const benchConfig = `{"resourceList":[
  {"resourceName":"netdev","selectors":{"drivers":["iavf"]}},
  {"resourceName":"dpdk","selectors":{"drivers":["vfio-pci"]}}]}`

// BenchmarkDiscover1024VFs: one full discovery of a 1024-VF node into two pools.
func BenchmarkDiscover1024VFs(b *testing.B) {
	tr := bigNode(b)
	d := &Discoverer{Sys: pci.New(tr.Root), DefaultRouteLinks: func() ([]string, error) { return nil, nil }}
	c := mustParse(b, benchConfig)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		got, err := d.Discover(c)
		if err != nil {
			b.Fatal(err)
		}
		if n := len(got["intel.com/netdev"]) + len(got["intel.com/dpdk"]); n != 1024 {
			b.Fatalf("%d VFs pooled", n)
		}
	}
}

// BenchmarkHealthTick1024VFs: one round of the manager's per-tick work when nothing changed
// (fingerprint plus the health of every member), the steady-state cost every 250 ms.
func BenchmarkHealthTick1024VFs(b *testing.B) {
	tr := bigNode(b)
	d := &Discoverer{Sys: pci.New(tr.Root), DefaultRouteLinks: func() ([]string, error) { return nil, nil }}
	c := mustParse(b, benchConfig)
	found, err := d.Discover(c)
	if err != nil {
		b.Fatal(err)
	}
	m := &Manager{sys: d.Sys}
	var pools []*pool
	for _, pc := range c.ResourceList {
		p := newPool(pc, d.Sys, devinfo.Dir(b.TempDir()), slog.New(slog.NewTextHandler(io.Discard, nil)))
		p.set(pc, found[pc.FullName()])
		pools = append(pools, p)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		state, _ := m.look()
		for _, p := range pools {
			p.refreshHealth(state)
		}
	}
}

// BenchmarkAllocate8VFIO: Allocate of 8 vfio-pci VFs (device specs, _INFO env, 8 device-info
// files written).
func BenchmarkAllocate8VFIO(b *testing.B) {
	dinfo := devinfo.Dir(b.TempDir())
	tr := bigNode(b)
	d := &Discoverer{Sys: pci.New(tr.Root), DefaultRouteLinks: func() ([]string, error) { return nil, nil }}
	c := mustParse(b, benchConfig)
	found, err := d.Discover(c)
	if err != nil {
		b.Fatal(err)
	}
	pc := c.ResourceList[1]
	p := newPool(pc, d.Sys, dinfo, slog.New(slog.NewTextHandler(io.Discard, nil)))
	p.set(pc, found[pc.FullName()])
	var ids []string
	for _, dev := range p.members()[:8] {
		ids = append(ids, dev.ID)
	}
	req := &dp.AllocateRequest{ContainerRequests: []*dp.ContainerAllocateRequest{{DevicesIds: ids}}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := p.Allocate(context.Background(), req)
		if err != nil {
			b.Fatal(err)
		}
		if len(r.ContainerResponses[0].Devices) != 9 {
			b.Fatalf("%d device specs", len(r.ContainerResponses[0].Devices))
		}
	}
}
