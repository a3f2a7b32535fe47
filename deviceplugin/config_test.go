package deviceplugin

import (
	"strings"
	"testing"
)

func TestParseUpstreamConfig(t *testing.T) {
	// The shape of upstream's documented example, unchanged.
	c := mustParse(t, `{
	  "resourceList": [
	    {"resourceName": "intel_sriov_netdevice",
	     "selectors": {"vendors": ["8086"], "devices": ["154c", "10ed", "1889"], "drivers": ["i40evf", "iavf", "ixgbevf"]}},
	    {"resourceName": "intel_sriov_dpdk", "resourcePrefix": "intel.com", "excludeTopology": true,
	     "selectors": [{"vendors": ["8086"], "devices": ["154c", "10ed"], "drivers": ["vfio-pci"], "pfNames": ["enp0s0f0", "enp2s2f1#0-3"]}],
	     "additionalInfo": {"*": {"token": "3e49019f-412f-4f02-824e-4cd195944205"}}},
	    {"resourceName": "mlnx_sriov_rdma", "resourcePrefix": "mellanox.com",
	     "selectors": {"vendors": ["15b3"], "devices": ["1018"], "drivers": ["mlx5_core"], "isRdma": true}},
	    {"resourceName": "intel_fpga", "deviceType": "accelerator", "selectors": {"vendors": ["8086"], "devices": ["0d90"]}}
	  ]}`)
	if len(c.ResourceList) != 4 {
		t.Fatalf("%d pools", len(c.ResourceList))
	}
	p := c.ResourceList[0]
	if p.FullName() != "intel.com/intel_sriov_netdevice" || p.DeviceType != TypeNetDevice || p.SocketName() != "intel.com_intel_sriov_netdevice.sock" {
		t.Errorf("defaults not applied: %s %s %s", p.FullName(), p.DeviceType, p.SocketName())
	}
	if got := c.ResourceList[2].EnvName(); got != "PCIDEVICE_MELLANOX_COM_MLNX_SRIOV_RDMA" {
		t.Errorf("env name %s", got)
	}
	if !c.ResourceList[1].ExcludeTopology || len(c.ResourceList[1].Selectors) != 1 {
		t.Errorf("pool 1 = %+v", c.ResourceList[1])
	}
}

func TestUnknownFieldsAreWarnings(t *testing.T) {
	// An older upstream config put isRdma on the pool; upstream ignores unknown fields.
	c := mustParse(t, `{"resourceList":[{"resourceName":"rdma","isRdma":true,"selectors":[{"vendors":["15b3"]},{"vendor":["8086"]}]},
	  {"resourceName":"v","deviceType":"vhostUser","vhostUser":{"dir":"/v","count":1,"sockets":2}}]}`)
	want := []string{
		`resourceList[0] "rdma": unknown field "isRdma" ignored`,
		`resourceList[0] "rdma": selectors[1]: unknown field "vendor" ignored`,
		`resourceList[1] "v": vhostUser: unknown field "sockets" ignored`,
	}
	if strings.Join(c.Warnings, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(c.Warnings, "\n"), strings.Join(want, "\n"))
	}
}

func TestEnvNames(t *testing.T) {
	for _, tc := range []struct{ prefix, name, typ, want string }{
		{"intel.com", "sriov_netdevice", "", "PCIDEVICE_INTEL_COM_SRIOV_NETDEVICE"},
		{"example.org", "dpdk-pool", "", "PCIDEVICE_EXAMPLE_ORG_DPDK-POOL"},
		{"a.b.c", "X", "accelerator", "PCIDEVICE_A_B_C_X"},
		{"multinet.io", "vhost", "vhostUser", "VHOSTUSER_MULTINET_IO_VHOST"},
	} {
		p := Pool{ResourcePrefix: tc.prefix, ResourceName: tc.name, DeviceType: tc.typ}
		if got := p.EnvName(); got != tc.want {
			t.Errorf("%s/%s: %s, want %s", tc.prefix, tc.name, got, tc.want)
		}
	}
}

func TestConfigErrorsNamePoolAndField(t *testing.T) {
	pool := func(body string) string {
		return `{"resourceList":[{"resourceName":"ok","selectors":{}},{` + body + `}]}`
	}
	cases := []struct{ cfg, want string }{
		{`{`, "unexpected EOF"},
		{`{"resourceList":{}}`, "resourceList"},
		{`{}`, "no resourceList"},
		{`{"resourceList":[]} {}`, "trailing data"},
		{pool(`"resourceName":""`), `resourceList[1] "": resourceName: missing`},
		{pool(`"resourceName":"a/b"`), `resourceList[1] "a/b": resourceName "a/b"`},
		{pool(`"resourceName":"p","resourcePrefix":"Bad_Prefix"`), `"p": resourcePrefix "Bad_Prefix"`},
		{pool(`"resourceName":"p","deviceType":"gpu"`), `"p": deviceType "gpu"`},
		{pool(`"resourceName":"p","deviceType":"auxNetDevice","selectors":{"vendors":["15b3"]}`), `"p": selectors[0].auxTypes: missing`},
		{pool(`"resourceName":"p","deviceType":"auxNetDevice","selectors":{"auxTypes":["eth"]}`), `"p": selectors[0].auxTypes: "eth": only "sf"`},
		{pool(`"resourceName":"p","selectors":{"auxTypes":["sf"]}`), `"p": selectors[0].auxTypes: only for deviceType "auxNetDevice"`},
		{pool(`"resourceName":"p","selectors":{"pKeys":["8001"]}`), `"p": selectors[0].pKeys: "8001" is not a 16-bit hex`},
		{pool(`"resourceName":"p","selectors":{"vdpaType":"vhost","isRdma":true}`), `"p": selectors[0].vdpaType: not with isRdma`},
		{pool(`"resourceName":"p","selectors":{"vdpaType":"bogus"}`), `"p": selectors[0].vdpaType "bogus": want "vhost" or "virtio"`},
		{pool(`"resourceName":"p","deviceType":"accelerator","selectors":{"vdpaType":"vhost"}`), `"p": selectors[0].vdpaType: only for deviceType "netDevice"`},
		{pool(`"resourceName":"p","selectors":{"vendors":["80861"]}`), `"p": selectors[0].vendors: "80861"`},
		{pool(`"resourceName":"p","selectors":{"devices":["zz"]}`), `"p": selectors[0].devices: "zz"`},
		{pool(`"resourceName":"p","selectors":[{},{"pciAddresses":["3b:01.0"]}]`), `"p": selectors[1].pciAddresses: "3b:01.0"`},
		{pool(`"resourceName":"p","selectors":{"pfNames":["ens1#3-1"]}`), `"p": selectors[0].pfNames: "ens1#3-1": range 3-1 runs backwards`},
		{pool(`"resourceName":"p","selectors":{"pfNames":["ens1#x"]}`), `selectors[0].pfNames: "ens1#x"`},
		{pool(`"resourceName":"p","selectors":{"pfNames":["#1"]}`), `selectors[0].pfNames: "#1": no PF`},
		{pool(`"resourceName":"p","selectors":{"rootDevices":["ens1f0"]}`), `selectors[0].rootDevices: "ens1f0" is not a PCI address`},
		{pool(`"resourceName":"p","selectors":{"acpiIndexes":["one"]}`), `selectors[0].acpiIndexes: "one"`},
		{pool(`"resourceName":"p","selectors":{"ddpProfiles":["GTP"]}`), `selectors[0].ddpProfiles: not supported`},
		{pool(`"resourceName":"p","deviceType":"vhostUser"`), `"p": vhostUser: missing`},
		{pool(`"resourceName":"p","deviceType":"vhostUser","vhostUser":{"dir":"rel","count":1}`), `"p": vhostUser.dir "rel"`},
		{pool(`"resourceName":"p","deviceType":"vhostUser","vhostUser":{"dir":"/v","count":0}`), `"p": vhostUser.count 0`},
		{pool(`"resourceName":"p","deviceType":"vhostUser","vhostUser":{"dir":"/v","count":1,"mode":"both"}`), `"p": vhostUser.mode "both"`},
		{pool(`"resourceName":"p","deviceType":"vhostUser","vhostUser":{"dir":"/` + strings.Repeat("d", 110) + `","count":1}`), `over the 107`},
		{pool(`"resourceName":"p","deviceType":"vhostUser","vhostUser":{"dir":"/v","count":1},"selectors":{}`), `"p": selectors: a vhostUser pool`},
		{pool(`"resourceName":"p","vhostUser":{"dir":"/v","count":1}`), `"p": vhostUser: only for deviceType`},
		{pool(`"resourceName":"ok","selectors":{}`), `resourceList[1] "ok": resource intel.com/ok already defined by resourceList[0]`},
		{pool(`"resourceName":"p"`), `"p": selectors: missing`},
		{pool(`"resourceName":"p","selectors":null`), `"p": selectors: missing`},
		{pool(`"resourceName":"p","selectors":[]`), `"p": selectors: missing`},
	}
	for _, tc := range cases {
		c, err := Parse([]byte(tc.cfg))
		if err == nil {
			// A bad pool is refused alone: the good one keeps serving.
			if err = c.Err(); err == nil {
				t.Errorf("accepted: %s", tc.cfg)
				continue
			}
			if len(c.ResourceList) != 1 || c.ResourceList[0].ResourceName != "ok" || len(c.Refused) != 1 {
				t.Errorf("%s: pools %+v, refused %+v; want only the good pool served", tc.cfg, c.ResourceList, c.Refused)
			}
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s\n  error %q\n  want it to contain %q", tc.cfg, err, tc.want)
		}
	}
}

// FuzzParse: any input either fails cleanly or yields a config whose pools are all valid and
// whose derived names are usable by kubelet.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"resourceList":[{"resourceName":"a","selectors":{"pfNames":["ens1#0-3,5"]}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, p := range c.ResourceList {
			if p.ResourcePrefix == "" || p.DeviceType == "" || !resourceNameRe.MatchString(p.ResourceName) {
				t.Fatalf("pool not normalised: %+v", p)
			}
			if seen[p.FullName()] {
				t.Fatalf("duplicate %s accepted", p.FullName())
			}
			seen[p.FullName()] = true
			if strings.ContainsAny(p.SocketName(), "/") {
				t.Fatalf("socket name %q has a slash", p.SocketName())
			}
			if p.DeviceType == TypeVhostUser && (p.VhostUser == nil || p.VhostUser.Count < 1 || p.VhostUser.Count > maxVhostSlots) {
				t.Fatalf("vhostUser pool accepted with %+v", p.VhostUser)
			}
			for _, s := range p.Selectors {
				for _, r := range append(append([]vfRange{}, s.pfNames...), s.rootDevices...) {
					if len(r.indexes) > maxVFIndex+1 {
						t.Fatalf("range too large")
					}
				}
			}
		}
	})
}
