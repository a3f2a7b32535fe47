package deviceplugin

import (
	"reflect"
	"sort"
	"strings"
	"testing"
)

func mustParse(t testing.TB, s string) *Config {
	t.Helper()
	c, err := Parse([]byte(s))
	if err != nil {
		t.Fatalf("parse %s: %v", s, err)
	}
	return c
}

func TestSelectorsEveryField(t *testing.T) {
	_, d := fixture(t)
	all := []string{vf0(0), vf0(1), vf0(2), vf0(3), pf0b, vf1(0), vf1(1), vf1(2), vf1(3), nic2}
	cases := []struct {
		name, selectors string
		want            []string
	}{
		{"empty selector takes every netdev-class device but PFs with VFs and the uplink", `{}`, all},
		{"vendors", `{"vendors":["15b3"]}`, []string{vf1(0), vf1(1), vf1(2), vf1(3)}},
		{"vendors upper case", `{"vendors":["15B3"]}`, []string{vf1(0), vf1(1), vf1(2), vf1(3)}},
		{"devices", `{"devices":["1889"]}`, []string{vf0(0), vf0(1), vf0(2), vf0(3)}},
		{"drivers", `{"drivers":["vfio-pci"]}`, []string{vf1(2), vf1(3)}},
		{"pciAddresses", `{"pciAddresses":["0000:3b:01.1","0000:86:00.5"]}`, []string{vf0(1), vf1(3)}},
		{"pfNames whole PF", `{"pfNames":["ens1f0"]}`, []string{vf0(0), vf0(1), vf0(2), vf0(3)}},
		{"pfNames case-insensitive range", `{"pfNames":["ENS1F0#1-2"]}`, []string{vf0(1), vf0(2)}},
		{"pfNames list and range", `{"pfNames":["ens1f0#0,3","ens2f0#2-3"]}`, []string{vf0(0), vf0(3), vf1(2), vf1(3)}},
		{"pfNames matches a plain NIC by its own name", `{"pfNames":["mnt-eno2"]}`, []string{nic2}},
		{"rootDevices", `{"rootDevices":["0000:86:00.0"]}`, []string{vf1(0), vf1(1), vf1(2), vf1(3)}},
		{"rootDevices range", `{"rootDevices":["0000:86:00.0#1-2"]}`, []string{vf1(1), vf1(2)}},
		{"linkTypes (vfio VFs have no netdev)", `{"linkTypes":["ether"],"vendors":["15b3"]}`, []string{vf1(0), vf1(1)}},
		{"isRdma", `{"isRdma":true}`, []string{vf1(0), vf1(1)}},
		{"acpiIndexes", `{"acpiIndexes":["2"]}`, []string{nic2}},
		{"all fields of one object must match", `{"vendors":["8086"],"drivers":["mlx5_core"]}`, nil},
		{"list: any object matches", `[{"drivers":["vfio-pci"]},{"pfNames":["ens1f0#0"]}]`, []string{vf0(0), vf1(2), vf1(3)}},
		{"needVhostNet is not a filter", `{"drivers":["iavf"],"needVhostNet":true}`, []string{vf0(0), vf0(1), vf0(2), vf0(3)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParse(t, `{"resourceList":[{"resourceName":"p","selectors":`+tc.selectors+`}]}`)
			got, err := d.Discover(c)
			if err != nil {
				t.Fatal(err)
			}
			if g := ids(got["intel.com/p"]); !sameSet(g, tc.want) {
				t.Errorf("pool = %v, want %v", g, tc.want)
			}
		})
	}
}

func sameSet(a, b []string) bool {
	a, b = append([]string(nil), a...), append([]string(nil), b...)
	sort.Strings(a)
	sort.Strings(b)
	return len(a) == len(b) && (len(a) == 0 || reflect.DeepEqual(a, b))
}

func TestPoolsByTypeAndVhostNet(t *testing.T) {
	_, d := fixture(t)
	c := mustParse(t, `{"resourceList":[
	  {"resourceName":"iavf","selectors":{"drivers":["iavf"],"needVhostNet":true}},
	  {"resourceName":"mlx_dpdk","resourcePrefix":"nvidia.com","selectors":{"vendors":["15b3"],"drivers":["vfio-pci"]}},
	  {"resourceName":"fec","deviceType":"accelerator","selectors":{"drivers":["vfio-pci"]}}]}`)
	got, err := d.Discover(c)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"intel.com/iavf":      {vf0(0), vf0(1), vf0(2), vf0(3)},
		"nvidia.com/mlx_dpdk": {vf1(2), vf1(3)},
		"intel.com/fec":       {accel},
	}
	for name, w := range want {
		if !sameSet(ids(got[name]), w) {
			t.Errorf("%s = %v, want %v", name, ids(got[name]), w)
		}
	}
	for _, dev := range got["intel.com/iavf"] {
		if !dev.VhostNet || dev.PFNetdev != "ens1f0" || dev.PCI.PFAddress != pf0 || dev.NUMANode() != 0 {
			t.Errorf("%s: vhostNet %v pfNetdev %q pf %q numa %d", dev.ID, dev.VhostNet, dev.PFNetdev, dev.PCI.PFAddress, dev.NUMANode())
		}
	}
	if got["nvidia.com/mlx_dpdk"][0].VhostNet {
		t.Errorf("vhost-net given to a pool that did not ask for it")
	}
}

func TestDeviceInTwoPoolsNamesBoth(t *testing.T) {
	_, d := fixture(t)
	c := mustParse(t, `{"resourceList":[
	  {"resourceName":"a","selectors":{"pfNames":["ens1f0#0-1"]}},
	  {"resourceName":"b","resourcePrefix":"example.com","selectors":{"pfNames":["ens1f0#1-3"]}}]}`)
	_, err := d.Discover(c)
	if err == nil {
		t.Fatal("overlapping pools accepted")
	}
	for _, s := range []string{vf0(1), "intel.com/a", "example.com/b"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %s", err, s)
		}
	}
}

func TestUplinkAndBusyPFNeverPooled(t *testing.T) {
	_, d := fixture(t)
	c := mustParse(t, `{"resourceList":[{"resourceName":"x","selectors":{"pciAddresses":["0000:00:1f.6","0000:3b:00.0","0000:3b:00.1"]}}]}`)
	got, err := d.Discover(c)
	if err != nil {
		t.Fatal(err)
	}
	// pf0 has VFs and the uplink carries the default route: only the idle PF remains.
	if g := ids(got["intel.com/x"]); !sameSet(g, []string{pf0b}) {
		t.Errorf("pool = %v, want only %s", g, pf0b)
	}
}

func TestVhostUserSlots(t *testing.T) {
	c := mustParse(t, `{"resourceList":[{"resourceName":"vhost","resourcePrefix":"multinet.io","deviceType":"vhostUser",
	  "vhostUser":{"dir":"/var/run/multinet/vhost","count":3,"mode":"server","containerDir":"/run/vhu"}}]}`)
	got, err := (&Discoverer{}).Discover(c)
	if err != nil {
		t.Fatal(err)
	}
	slots := got["multinet.io/vhost"]
	if len(slots) != 3 {
		t.Fatalf("%d slots, want 3", len(slots))
	}
	s := slots[2]
	if s.ID != "vhost-2" || s.Slot.HostDir != "/var/run/multinet/vhost/vhost-2" || s.Slot.ContainerSocket != "/run/vhu/vhost-2/sock" || s.Slot.Mode != "server" {
		t.Errorf("slot 2 = %s %+v", s.ID, *s.Slot)
	}
}
