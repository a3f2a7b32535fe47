package deviceplugin

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	dp "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/multinet-io/multinet/conformance"
	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/pci/pcitest"
)

// TestConformanceConfigFiles runs upstream's documented config.json files through Parse: a
// file upstream loads must give every pool and refuse none; one it rejects must fail or refuse.
func TestConformanceConfigFiles(t *testing.T) {
	conformance.Run(t, "sriovdp-configs/index.json", func(t *testing.T, c conformance.Case) conformance.Outcome {
		dir, _ := conformance.Dir()
		b, err := os.ReadFile(filepath.Join(dir, "sriovdp-configs", c.Str("file")))
		if err != nil {
			t.Fatal(err)
		}
		return judgeConfig(b, c.ExpectError(), -1)
	})
}

// judgeConfig: upstream "rejects" a config when readConfig fails, validConfigs is false (the
// plugin exits), or the resource is dropped; ours when Parse fails or refuses a pool. want is
// the number of pools upstream loads (-1: all of them).
func judgeConfig(b []byte, expectError bool, want int) conformance.Outcome {
	c, err := Parse(b)
	if err == nil {
		err = c.Err()
	}
	if expectError {
		if err == nil {
			return conformance.Differs("accepted with %d pools", len(c.ResourceList))
		}
		return conformance.Same()
	}
	if want >= 0 && c != nil && err != nil && len(c.ResourceList) == want {
		// Upstream skips the resource with a warning; we refuse that pool and report it.
		return conformance.Same()
	}
	if err != nil {
		return conformance.Differs("refused: %v", err)
	}
	return conformance.Same()
}

// TestConformanceDevicePluginCases runs upstream's config, selector and device cases: configs
// through Parse, selectors through discovery on a fake sysfs tree built from the case's device
// table, device specs through Allocate and ListAndWatch.
func TestConformanceDevicePluginCases(t *testing.T) {
	conformance.Run(t, "sriovdp-configs/cases.json", judgeDP)
}

func judgeDP(t *testing.T, c conformance.Case) conformance.Outcome {
	switch c.Str("level") {
	case "config-file":
		b := []byte(c.Str("config_file_raw"))
		if len(b) == 0 {
			b = c.Fields["config_file"]
		}
		return judgeConfig(b, c.ExpectError(), loaded(c))
	case "resource-config":
		return judgeConfig(wrapPool(c.Fields["config"]), c.ExpectError(), loaded(c))
	case "resource-name":
		b, _ := json.Marshal(map[string]any{"resourceList": []any{map[string]any{"resourceName": c.Str("resourceName"), "selectors": map[string]any{}}}})
		return judgeConfig(b, c.ExpectError(), -1)
	case "selector-name":
		// GetSelector(name): whether the attribute is one selectors can filter on.
		known := selectorFields[c.Str("selector")]
		if known == c.ExpectError() {
			return conformance.Differs("selector %q known: %v", c.Str("selector"), known)
		}
		return conformance.Same()
	case "device-filter":
		pool := map[string]json.RawMessage{"resourceName": json.RawMessage(`"x"`)}
		if dt := c.Str("deviceType"); dt != "" {
			pool["deviceType"], _ = json.Marshal(dt)
		} else {
			return conformance.Differs("an empty deviceType reaches upstream's factory only when called directly; in config.json it means netDevice, as in upstream's readConfig")
		}
		raw := c.Str("selectors_raw")
		b, _ := json.Marshal(pool)
		b = []byte(strings.TrimSuffix(string(b), "}") + `,"selectors":` + raw + "}")
		return judgeConfig([]byte(`{"resourceList":[`+string(b)+`]}`), c.ExpectError(), -1)
	case "selector-filter", "device-provider-filter":
		var sels json.RawMessage = c.Fields["selectors"]
		if c.Has("expected_selected_per_selector_index") {
			var list []json.RawMessage
			var want [][]string
			_ = json.Unmarshal(sels, &list)
			_ = c.Decode("expected_selected_per_selector_index", &want)
			for i, s := range list {
				if out := judgeSelection(t, c, c.Str("deviceType"), s, want[i]); out.Differ != "" {
					return conformance.Differs("selector %d: %s", i, out.Differ)
				}
			}
			return conformance.Same()
		}
		var want []string
		_ = c.Decode("expected_selected", &want)
		return judgeSelection(t, c, c.Str("deviceType"), sels, want)
	case "resource-pool":
		var cfgs []map[string]json.RawMessage
		var wants [][]string
		if c.Has("configs") {
			_ = c.Decode("configs", &cfgs)
			_ = c.Decode("expected_selected_per_config", &wants)
		} else {
			var one map[string]json.RawMessage
			var want []string
			_ = c.Decode("config", &one)
			_ = c.Decode("expected_selected", &want)
			cfgs, wants = []map[string]json.RawMessage{one}, [][]string{want}
		}
		for i, cfg := range cfgs {
			var dt string
			_ = json.Unmarshal(cfg["deviceType"], &dt)
			if out := judgeSelection(t, c, dt, cfg["selectors"], wants[i]); out.Differ != "" {
				return conformance.Differs("config %d: %s", i, out.Differ)
			}
		}
		return conformance.Same()
	case "device-spec":
		return judgeDeviceSpec(t, c)
	case "selector-order":
		return judgeSelectorOrder(t, c)
	}
	t.Fatalf("level %q unknown to the judge", c.Str("level"))
	return conformance.Outcome{}
}

func loaded(c conformance.Case) int {
	n := -1
	if c.Has("resources_loaded") {
		_ = c.Decode("resources_loaded", &n)
	}
	return n
}

func wrapPool(pool json.RawMessage) []byte {
	return []byte(`{"resourceList":[` + string(pool) + `]}`)
}

// tableDevice is one row of upstream's device tables.
type tableDevice struct {
	ID         string  `json:"id"`
	Vendor     string  `json:"vendor"`
	Device     string  `json:"device"`
	Driver     string  `json:"driver"`
	PCIAddress string  `json:"pciAddress"`
	PFName     string  `json:"pfName"`
	RootDevice string  `json:"rootDevice"`
	FuncID     *int    `json:"funcId"`
	LinkType   string  `json:"linkType"`
	ACPIIndex  string  `json:"acpiIndex"`
	IsRdma     bool    `json:"isRdma"`
	DDPProfile string  `json:"ddpProfile"`
	PKey       string  `json:"pKey"`
	VdpaType   *string `json:"vdpaType"`
	AuxType    string  `json:"auxType"`
}

// selectorKeys are the attributes the selectors look at, lower-cased: only those have to be
// true to the table in the tree built for it.
func selectorKeys(sels json.RawMessage) map[string]bool {
	var list []map[string]json.RawMessage
	if json.Unmarshal(sels, &list) != nil {
		var one map[string]json.RawMessage
		_ = json.Unmarshal(sels, &one)
		list = append(list, one)
	}
	keys := map[string]bool{}
	for _, s := range list {
		for k := range s {
			keys[strings.ToLower(k)] = true
		}
	}
	return keys
}

var userspace = map[string]bool{"vfio-pci": true, "igb_uio": true, "uio_pci_generic": true}

// buildTable lays a device table out as a kernel-shaped sysfs tree: a row with a VF index or a
// root device other than itself is a VF of that PF (PF netdev = pfName), any other row a
// function of its own, named by pfName. It fails, naming the row, where the table asks for
// what no kernel shows (a DPDK-bound device with a link type, a link type netlink has no name
// for, a DDP profile or PKey that sysfs does not carry).
func buildTable(t *testing.T, deviceType string, devs []tableDevice, keys map[string]bool) (*pci.SysFS, map[string]string, error) {
	tr := pcitest.New(t)
	type pfInfo struct {
		addr, netdev string
		vfs          map[int]tableDevice
		self         *tableDevice
	}
	pfs := map[string]*pfInfo{} // by address
	pfByName := map[string]*pfInfo{}
	nextPF, nextDev := 0, 0
	genAddr := func(bus int, n *int) string {
		a := fmt.Sprintf("0000:%02x:%02x.%d", bus, *n/8, *n%8)
		*n++
		return a
	}
	pfFor := func(addr, name string) (*pfInfo, error) {
		p := pfs[addr]
		if p == nil && addr == "" {
			p = pfByName[name]
		}
		if p == nil {
			if addr == "" {
				addr = genAddr(0xd0, &nextPF)
			}
			p = &pfInfo{addr: addr, netdev: name, vfs: map[int]tableDevice{}}
			pfs[addr] = p
		}
		if name != "" {
			if p.netdev != "" && p.netdev != name && keys["pfnames"] {
				return nil, fmt.Errorf("PF %s is named both %s and %s", addr, p.netdev, name)
			}
			if p.netdev == "" {
				p.netdev = name
			}
			pfByName[name] = p
		}
		return p, nil
	}
	ids := map[string]string{} // address -> table id
	var plain []tableDevice
	for _, d := range devs {
		switch {
		case keys["ddpprofiles"] && d.DDPProfile != "":
			return nil, nil, fmt.Errorf("%s: DDP profile %q is not in sysfs", d.ID, d.DDPProfile)
		case keys["pkeys"] && keys["isrdma"] && d.PKey != "" && !d.IsRdma:
			return nil, nil, fmt.Errorf("%s: a PKey %q lives on an RDMA device, but the row has none", d.ID, d.PKey)
		case keys["linktypes"] && d.LinkType != "" && d.LinkType != "ether" && d.LinkType != "infiniband":
			return nil, nil, fmt.Errorf("%s: link type %q has no ARPHRD number", d.ID, d.LinkType)
		case keys["linktypes"] && d.LinkType != "" && userspace[d.Driver]:
			return nil, nil, fmt.Errorf("%s: bound to %s it has no netdev, so no link type %q", d.ID, d.Driver, d.LinkType)
		}
		idx := -1
		if d.FuncID != nil {
			idx = *d.FuncID
		}
		if d.Driver == "" {
			d.Driver = "tdrv" // a kernel driver: the row's netdev exists
		}
		isVF := idx >= 0 || (d.RootDevice != "" && d.RootDevice != d.PCIAddress)
		if !isVF {
			plain = append(plain, d)
			continue
		}
		p, err := pfFor(d.RootDevice, d.PFName)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", d.ID, err)
		}
		if idx < 0 {
			for idx = 0; ; idx++ {
				if _, taken := p.vfs[idx]; !taken {
					break
				}
			}
		}
		if _, taken := p.vfs[idx]; taken {
			return nil, nil, fmt.Errorf("%s: VF %d of %s twice", d.ID, idx, p.addr)
		}
		p.vfs[idx] = d
	}
	// A plain row named like a PF that has VFs is that PF.
	var rest []tableDevice
	for _, d := range plain {
		if p := pfByName[d.PFName]; d.PFName != "" && p != nil {
			dd := d
			p.self = &dd
			continue
		}
		rest = append(rest, d)
	}
	class := "netDevice"
	if deviceType == TypeAccelerator {
		class = TypeAccelerator
	}
	netdevFor := func(d tableDevice, own string) string {
		if userspace[d.Driver] || d.Driver == "" {
			return ""
		}
		if own != "" {
			return own
		}
		return "t" + strings.NewReplacer("[", "", "]", "", ":", "", ".", "").Replace(d.ID)
	}
	vdpaIndex := 0
	finish := func(addr, netdev string, d tableDevice) {
		if d.ACPIIndex != "" {
			var n int
			fmt.Sscan(d.ACPIIndex, &n)
			tr.SetACPIIndex(addr, n)
		}
		ib := "mlx5_" + strings.NewReplacer(":", "", ".", "").Replace(addr)
		if d.IsRdma || (keys["pkeys"] && d.PKey != "") {
			tr.SetRDMA(addr, ib)
		}
		if keys["pkeys"] && d.PKey != "" {
			var k uint16
			fmt.Sscanf(d.PKey, "0x%x", &k)
			tr.SetPKey(addr, ib, k)
		}
		if d.LinkType == "infiniband" && netdev != "" {
			tr.SetLinkType(addr, netdev, 32)
		}
		if d.VdpaType != nil && *d.VdpaType != "" {
			tr.AddVdpa(pcitest.Vdpa{Parent: addr, Index: vdpaIndex, Driver: *d.VdpaType + "_vdpa", Netdev: fmt.Sprintf("vdpa%dnet", vdpaIndex)})
			vdpaIndex++
		}
	}
	or := func(s, def string) string {
		if s == "" {
			return def
		}
		return s
	}
	pfAddrs := make([]string, 0, len(pfs))
	for a := range pfs {
		pfAddrs = append(pfAddrs, a)
	}
	sort.Strings(pfAddrs)
	for _, a := range pfAddrs {
		p := pfs[a]
		pf := pcitest.PF{Address: p.addr, Vendor: "ffff", Device: "ffff", Driver: "pfdrv", Netdev: p.netdev, TotalVFs: 64}
		if p.self != nil {
			pf.Vendor, pf.Device, pf.Driver = or(p.self.Vendor, "ffff"), or(p.self.Device, "ffff"), or(p.self.Driver, "pfdrv")
			ids[p.addr] = p.self.ID
		}
		tr.AddPF(pf)
		if p.self != nil {
			finish(p.addr, p.netdev, *p.self)
		}
		maxIdx := -1
		for i := range p.vfs {
			maxIdx = max(maxIdx, i)
		}
		for i := 0; i <= maxIdx; i++ {
			d, ok := p.vfs[i]
			addr := d.PCIAddress
			if !ok || addr == "" || !pci.ValidAddress(addr) {
				addr = genAddr(0xe0, &nextDev)
			}
			if !ok {
				// Filler for a VF index the table skips: virtfn links are contiguous.
				tr.AddVF(pcitest.VF{PF: p.addr, Index: i, Address: addr, Vendor: "ffff", Device: "fffe"})
				continue
			}
			ids[addr] = d.ID
			nd := netdevFor(d, "")
			tr.AddVF(pcitest.VF{PF: p.addr, Index: i, Address: addr, Vendor: or(d.Vendor, "ffff"), Device: or(d.Device, "ffff"), Driver: d.Driver, Netdev: nd})
			finish(addr, nd, d)
		}
	}
	for _, d := range rest {
		addr := d.PCIAddress
		if addr == "" && pci.ValidAddress(d.RootDevice) {
			addr = d.RootDevice
		}
		if addr == "" || !pci.ValidAddress(addr) {
			addr = genAddr(0xe0, &nextDev)
		}
		if _, dup := ids[addr]; dup || pfs[addr] != nil {
			return nil, nil, fmt.Errorf("%s: address %s twice", d.ID, addr)
		}
		ids[addr] = d.ID
		if class == TypeAccelerator {
			tr.AddAccelerator(addr, or(d.Vendor, "ffff"), or(d.Device, "ffff"), d.Driver, 0)
			continue
		}
		if d.PFName != "" && (userspace[d.Driver] || d.Driver == "") && keys["pfnames"] {
			return nil, nil, fmt.Errorf("%s: bound to %q it has no netdev to be named %s", d.ID, d.Driver, d.PFName)
		}
		nd := netdevFor(d, d.PFName)
		tr.AddNIC(pcitest.NIC{Address: addr, Vendor: or(d.Vendor, "ffff"), Device: or(d.Device, "ffff"), Driver: d.Driver, Netdev: nd})
		finish(addr, nd, d)
	}
	return pci.New(tr.Root), ids, nil
}

// judgeSelection builds the case's device table as a sysfs tree, runs one pool with the
// selectors through discovery, and compares the members with upstream's selection.
func judgeSelection(t *testing.T, c conformance.Case, deviceType string, sels json.RawMessage, want []string) conformance.Outcome {
	var devs []tableDevice
	if err := c.Decode("devices", &devs); err != nil {
		t.Fatal(err)
	}
	if deviceType == "" {
		deviceType = TypeNetDevice
		if selectorKeys(sels)["auxtypes"] {
			deviceType = TypeAuxNetDevice
		}
	}
	build := buildTable
	if deviceType == TypeAuxNetDevice {
		build = buildAuxTable
	}
	sys, ids, err := build(t, deviceType, devs, selectorKeys(sels))
	if err != nil {
		return conformance.Differs("device table not representable in sysfs: %v", err)
	}
	pool, _ := json.Marshal(map[string]any{"resourceName": "conformance", "deviceType": deviceType, "selectors": sels})
	cfg, err := Parse(wrapPool(pool))
	if err == nil {
		err = cfg.Err()
	}
	if err != nil {
		return conformance.Differs("pool refused: %v", err)
	}
	d := &Discoverer{Sys: sys, DefaultRouteLinks: func() ([]string, error) { return nil, nil }}
	found, err := d.Discover(cfg)
	if err != nil {
		return conformance.Differs("discovery failed: %v", err)
	}
	got := []string{}
	for _, m := range found[cfg.ResourceList[0].FullName()] {
		if id, ok := ids[m.ID]; ok {
			got = append(got, id)
		}
	}
	sort.Strings(got)
	want = append([]string{}, want...)
	sort.Strings(want)
	if !reflect.DeepEqual(got, want) {
		return conformance.Differs("selected %v, upstream %v", got, want)
	}
	return conformance.Same()
}

// judgeDeviceSpec allocates the case's device through a pool and compares the device specs,
// the _INFO env's keys and the advertised topology with upstream's.
func judgeDeviceSpec(t *testing.T, c conformance.Case) conformance.Outcome {
	dinfo := devinfo.Dir(t.TempDir())
	var cfgRaw map[string]json.RawMessage
	_ = c.Decode("config", &cfgRaw)
	if _, ok := cfgRaw["selectors"]; !ok {
		cfgRaw["selectors"] = json.RawMessage(`{}`)
	}
	b, _ := json.Marshal(cfgRaw)
	cfg, err := Parse(wrapPool(b))
	if err == nil {
		err = cfg.Err()
	}
	if err != nil {
		return conformance.Differs("pool refused: %v", err)
	}
	tr := pcitest.New(t)
	var one struct {
		PCIAddress string `json:"pciAddress"`
		Driver     string `json:"driver"`
		NUMANode   string `json:"numa_node"`
	}
	_ = c.Decode("device", &one)
	if one.PCIAddress != "" {
		tr.AddNIC(pcitest.NIC{Address: one.PCIAddress, Vendor: "8086", Device: "154c", Driver: or(one.Driver, "iavf"), Netdev: "t0"})
	}
	var rows []struct {
		ID     string `json:"id"`
		Driver string `json:"driver"`
		RDMA   bool   `json:"rdma"`
	}
	_ = c.Decode("devices", &rows)
	for i, r := range rows {
		tr.AddNIC(pcitest.NIC{Address: r.ID, Vendor: "15b3", Device: "1018", Driver: r.Driver, Netdev: fmt.Sprintf("t%d", i)})
		if r.RDMA {
			tr.SetRDMAVerbs(r.ID, fmt.Sprintf("mlx5_%d", i), i)
		}
	}
	sys := pci.New(tr.Root)
	p := &cfg.ResourceList[0]
	if c.Has("expected_per_selector_index") {
		var want []struct {
			Specs   int            `json:"deviceSpecs"`
			EnvKeys []string       `json:"env_keys"`
			Env     map[string]any `json:"env"`
		}
		_ = c.Decode("expected_per_selector_index", &want)
		for i := range p.Selectors {
			single := *p
			single.Selectors = Selectors{p.Selectors[i]}
			r, err := allocateOne(t, sys, single, single.Selectors[0].NeedVhostNet)
			if err != nil {
				return conformance.Differs("selector %d: allocate: %v", i, err)
			}
			if vfio, ok := want[i].Env["vfio"].(map[string]any); ok {
				// The case's IOMMU group 0 cannot be made in a tree (0 means "a fresh one"):
				// hold our answer to the node of the group the tree gave the device.
				vfio["dev-mount"], _ = sys.VFIODevicePath(one.PCIAddress)
			}
			if out := compareSpec(r, want[i].Specs, want[i].EnvKeys, want[i].Env); out.Differ != "" {
				return conformance.Differs("selector %d: %s", i, out.Differ)
			}
		}
		return conformance.Same()
	}
	var exp map[string]json.RawMessage
	_ = c.Decode("expected", &exp)
	if _, ok := exp["topology"]; ok {
		// excludeTopology: the device is listed without NUMA affinity.
		pl := newPool(*p, sys, dinfo, slog.Default())
		dev, _ := sys.Device(one.PCIAddress)
		dev.NUMANode = 0
		pl.set(*p, []*Device{{ID: one.PCIAddress, PCI: dev}})
		resp, _, _ := pl.list()
		if len(resp.Devices) != 1 || resp.Devices[0].Topology != nil {
			return conformance.Differs("listed as %v", resp.Devices)
		}
		return conformance.Same()
	}
	for id, raw := range exp {
		var w struct {
			IsRdma  bool     `json:"IsRdma"`
			Specs   int      `json:"deviceSpecs"`
			EnvKeys []string `json:"env_keys"`
		}
		_ = json.Unmarshal(raw, &w)
		d := &Discoverer{Sys: sys, DefaultRouteLinks: func() ([]string, error) { return nil, nil }}
		found, err := d.Discover(cfg)
		if err != nil {
			return conformance.Differs("discovery: %v", err)
		}
		var member bool
		for _, m := range found[p.FullName()] {
			member = member || m.ID == id
		}
		if !member {
			// Upstream builds the device and gives it no RDMA specs; we leave a device the
			// isRdma selector does not match out of the pool.
			if w.IsRdma {
				return conformance.Differs("%s not selected", id)
			}
			if w.Specs == 0 {
				continue
			}
		}
		r, err := allocateIDs(t, sys, *p, found[p.FullName()], id)
		if err != nil {
			return conformance.Differs("allocate %s: %v", id, err)
		}
		if out := compareSpec(r, w.Specs, w.EnvKeys, nil); out.Differ != "" {
			return conformance.Differs("%s: %s", id, out.Differ)
		}
	}
	return conformance.Same()
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func allocateOne(t *testing.T, sys *pci.SysFS, p Pool, vhost bool) (*dp.ContainerAllocateResponse, error) {
	d := &Discoverer{Sys: sys, DefaultRouteLinks: func() ([]string, error) { return nil, nil }}
	found, err := d.Discover(&Config{ResourceList: []Pool{p}})
	if err != nil {
		return nil, err
	}
	devs := found[p.FullName()]
	if len(devs) != 1 {
		return nil, fmt.Errorf("pool has %d devices, want 1", len(devs))
	}
	return allocateIDs(t, sys, p, devs, devs[0].ID)
}

func allocateIDs(t *testing.T, sys *pci.SysFS, p Pool, devs []*Device, id string) (*dp.ContainerAllocateResponse, error) {
	pl := newPool(p, sys, devinfo.Dir(t.TempDir()), slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	pl.set(p, devs)
	resp, err := pl.Allocate(context.Background(), &dp.AllocateRequest{ContainerRequests: []*dp.ContainerAllocateRequest{{DevicesIds: []string{id}}}})
	if err != nil {
		return nil, err
	}
	return resp.ContainerResponses[0], nil
}

func compareSpec(r *dp.ContainerAllocateResponse, specs int, envKeys []string, env map[string]any) conformance.Outcome {
	if len(r.Devices) != specs {
		var paths []string
		for _, d := range r.Devices {
			paths = append(paths, d.HostPath)
		}
		return conformance.Differs("%d device specs %v, upstream %d", len(r.Devices), paths, specs)
	}
	var info map[string]map[string]any
	for k, v := range r.Envs {
		if strings.HasSuffix(k, "_INFO") {
			_ = json.Unmarshal([]byte(v), &info)
		}
	}
	if len(info) != 1 {
		return conformance.Differs("_INFO env %v", r.Envs)
	}
	for _, e := range info {
		var keys []string
		for k := range e {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		want := append([]string(nil), envKeys...)
		sort.Strings(want)
		if !reflect.DeepEqual(keys, want) {
			return conformance.Differs("_INFO keys %v, upstream %v", keys, want)
		}
		if env != nil && !reflect.DeepEqual(map[string]any(e), env) {
			return conformance.Differs("_INFO %v, upstream %v", e, env)
		}
	}
	return conformance.Same()
}

// judgeSelectorOrder: a device both selector objects match takes the first one's settings.
func judgeSelectorOrder(t *testing.T, c conformance.Case) conformance.Outcome {
	var cfgRaw map[string]json.RawMessage
	_ = c.Decode("config", &cfgRaw)
	cfgRaw["resourceName"] = json.RawMessage(`"ordered"`)
	b, _ := json.Marshal(cfgRaw)
	cfg, err := Parse(wrapPool(b))
	if err == nil {
		err = cfg.Err()
	}
	if err != nil {
		return conformance.Differs("pool refused: %v", err)
	}
	tr := pcitest.New(t)
	tr.AddPF(pcitest.PF{Address: "0000:3b:00.0", Vendor: "8086", Device: "1593", Driver: "ice", Netdev: "p0", TotalVFs: 8})
	tr.AddVF(pcitest.VF{PF: "0000:3b:00.0", Index: 0, Address: "0000:3b:01.0", Vendor: "8086", Device: "154c", Driver: "iavf", Netdev: "p0v0"})
	tr.AddVF(pcitest.VF{PF: "0000:3b:00.0", Index: 1, Address: "0000:3b:01.1", Vendor: "8086", Device: "1889", Driver: "iavf", Netdev: "p0v1"})
	d := &Discoverer{Sys: pci.New(tr.Root), DefaultRouteLinks: func() ([]string, error) { return nil, nil }}
	found, err := d.Discover(cfg)
	if err != nil {
		return conformance.Differs("discovery: %v", err)
	}
	vhost := map[string]bool{}
	for _, m := range found[cfg.ResourceList[0].FullName()] {
		vhost[m.ID] = m.VhostNet
	}
	if len(vhost) != 2 || vhost["0000:3b:01.0"] || !vhost["0000:3b:01.1"] {
		return conformance.Differs("needVhostNet per device %v; upstream: only the 8086 device the first selector does not take", vhost)
	}
	return conformance.Same()
}

// buildAuxTable lays an auxiliary-device table out: each row is an auxiliary device
// <driver>.<auxType>.<n> of the PCI function rootDevice (vendor, device, driver and pfName are
// that parent's), with its own netdev, link type and RDMA device.
func buildAuxTable(t *testing.T, _ string, devs []tableDevice, keys map[string]bool) (*pci.SysFS, map[string]string, error) {
	tr := pcitest.New(t)
	parents := map[string]tableDevice{}
	ids := map[string]string{}
	next := 0
	for i, d := range devs {
		if d.AuxType == "" {
			continue // not an auxiliary device: nothing an auxNetDevice pool can see
		}
		if keys["linktypes"] && d.LinkType != "ether" && d.LinkType != "infiniband" {
			return nil, nil, fmt.Errorf("%s: link type %q has no ARPHRD number", d.ID, d.LinkType)
		}
		addr := d.RootDevice
		if !pci.ValidAddress(addr) {
			addr = fmt.Sprintf("0000:d1:00.%d", i%8)
		}
		if p, ok := parents[addr]; ok {
			if p.Vendor != d.Vendor || p.Device != d.Device || p.Driver != d.Driver || p.PFName != d.PFName {
				return nil, nil, fmt.Errorf("%s: parent %s described twice, differently", d.ID, addr)
			}
		} else {
			parents[addr] = d
			tr.AddNIC(pcitest.NIC{Address: addr, Vendor: or(d.Vendor, "ffff"), Device: or(d.Device, "ffff"), Driver: or(d.Driver, "tdrv"), Netdev: d.PFName})
		}
		name := fmt.Sprintf("%s.%s.%d", or(d.Driver, "tdrv"), d.AuxType, next)
		a := pcitest.Aux{Parent: addr, Name: name, Driver: or(d.Driver, "tdrv") + "." + d.AuxType, SFNum: -1, Netdev: fmt.Sprintf("aux%dnet", next)}
		if d.AuxType == "sf" {
			a.SFNum = next
			if d.FuncID != nil && *d.FuncID >= 0 {
				a.SFNum = *d.FuncID
			}
		}
		if d.LinkType == "infiniband" {
			a.ARPHRD = 32
		}
		if d.IsRdma {
			a.RDMA = fmt.Sprintf("mlx5_%d", next)
		}
		next++
		tr.AddAux(a)
		ids[name] = d.ID
	}
	return pci.New(tr.Root), ids, nil
}
