package vhostuser

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"

	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/devpools"
)

const goodConf = `{"cniVersion":"1.0.0","name":"dp","type":"vhostuser","deviceID":"vhost-0","bridge":"br-dpdk","vlan":100,"mtu":9000}`

func withField(field, value string) string {
	return strings.Replace(goodConf, `"bridge":"br-dpdk"`, `"bridge":"br-dpdk",`+`"`+field+`":`+value, 1)
}

func TestLoadConfDefaults(t *testing.T) {
	c, err := LoadConf([]byte(goodConf))
	if err != nil {
		t.Fatal(err)
	}
	if c.OVSDB != DefaultOVSDB || c.SocketName != "sock" || c.Timeout != 10 || c.VLAN != 100 || c.MTU != 9000 {
		t.Fatalf("defaults not applied: %+v", c)
	}
	c, err = LoadConf([]byte(withField("ovsdbSocket", `"/run/ovs/db.sock"`)))
	if err != nil || c.OVSDB != "unix:/run/ovs/db.sock" {
		t.Fatalf("a bare socket path should become unix:<path>: %v %q", err, c.OVSDB)
	}
	// The meta-plugin's deviceID capability (runtimeConfig) wins over the field.
	c, err = LoadConf([]byte(strings.Replace(goodConf, `"vlan":100`, `"vlan":100,"runtimeConfig":{"deviceID":"vhost-7"}`, 1)))
	if err != nil || c.DeviceID != "vhost-7" {
		t.Fatalf("runtimeConfig.deviceID: %v %q", err, c.DeviceID)
	}
}

// Every bad value is refused before anything on the host changes, with the field named.
func TestLoadConfErrorsNameTheField(t *testing.T) {
	cases := []struct{ conf, field string }{
		{strings.Replace(goodConf, `"bridge":"br-dpdk",`, ``, 1), `"bridge"`},
		{strings.Replace(goodConf, `"br-dpdk"`, `"br dpdk"`, 1), `"bridge"`},
		{strings.Replace(goodConf, `"br-dpdk"`, `"a-bridge-name-too-long"`, 1), `"bridge"`},
		{strings.Replace(goodConf, `"vlan":100`, `"vlan":4095`, 1), `"vlan"`},
		{strings.Replace(goodConf, `"vlan":100`, `"vlan":-1`, 1), `"vlan"`},
		{strings.Replace(goodConf, `"mtu":9000`, `"mtu":67`, 1), `"mtu"`},
		{strings.Replace(goodConf, `"mtu":9000`, `"mtu":9711`, 1), `"mtu"`},
		{withField("ovsdbSocket", `"db.sock"`), `"ovsdbSocket"`},
		{withField("ovsdbSocket", `"tcp:1.2.3.4"`), `"ovsdbSocket"`},
		{withField("socketDir", `"relative/dir"`), `"socketDir"`},
		{withField("containerDir", `"x"`), `"containerDir"`},
		{withField("socketName", `"a/b"`), `"socketName"`},
		{withField("ovsTimeout", `301`), `"ovsTimeout"`},
		{withField("logLevel", `"loud"`), `"logLevel"`},
		{withField("ipam", `{"type":"host-local"}`), `"ipam"`},
		{strings.Replace(goodConf, `"1.0.0"`, `"9.9.9"`, 1), `"cniVersion"`},
		{strings.Replace(goodConf, `"deviceID":"vhost-0",`, ``, 1), `"deviceID"`},
		{strings.Replace(goodConf, `"vhost-0"`, `"../etc"`, 1), `"deviceID"`},
		{strings.Replace(goodConf, `"vhost-0"`, `".."`, 1), `"deviceID"`},
	}
	for _, tc := range cases {
		_, err := LoadConf([]byte(tc.conf))
		if err == nil {
			t.Errorf("accepted %s", tc.conf)
			continue
		}
		if !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: error %q does not name field %s", tc.conf, err, tc.field)
		}
	}
}

// The slot's socket comes from the device plugin's device-info file, as Allocate writes it.
func TestResolveSlotFromDevicePluginInfo(t *testing.T) {
	p := &Plugin{DevInfo: devinfo.Dir(t.TempDir())}
	pool := t.TempDir()
	host := filepath.Join(pool, "vhost-3", "sock")
	save := func(resource, mode string) {
		if err := devinfo.Save(p.DevInfo.DPPath(resource, "vhost-3"), &nadv1.DeviceInfo{Type: nadv1.DeviceInfoTypeVHostUser,
			Version: nadv1.DeviceInfoVersion, VhostUser: &nadv1.VhostDevice{Mode: mode, Path: host}}); err != nil {
			t.Fatal(err)
		}
	}
	conf := func(extra string) *NetConf {
		c, err := LoadConf([]byte(strings.Replace(goodConf, `"vhost-0"`, `"vhost-3"`+extra, 1)))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if _, err := p.resolveSlot(conf("")); err == nil || !strings.Contains(err.Error(), "no vhost-user device-info") {
		t.Fatalf("no device-info: %v", err)
	}
	save("example.com/vhost", ModeServer)
	s, err := p.resolveSlot(conf(""))
	if err != nil {
		t.Fatal(err)
	}
	if s.HostSocket != host || s.ContainerSocket != host {
		t.Fatalf("slot %+v, want host and pod socket %s", s, host)
	}
	s, err = p.resolveSlot(conf(`,"containerDir":"/var/run/vhu"`))
	if err != nil || s.ContainerSocket != "/var/run/vhu/vhost-3/sock" {
		t.Fatalf("containerDir: %v %+v", err, s)
	}
	// The pool's containerDir as the device plugin publishes it, when the NAD does not say;
	// the NAD's still wins.
	p.PoolsFile = filepath.Join(t.TempDir(), "pools.json")
	if err := devpools.WriteFile(p.PoolsFile, devpools.File{Pools: map[string][]string{"example.com/vhost": {}},
		VhostUser: map[string]devpools.VhostPool{"example.com/vhost": {Dir: pool, ContainerDir: "/run/pod-vhu"}}}); err != nil {
		t.Fatal(err)
	}
	if s, err = p.resolveSlot(conf("")); err != nil || s.ContainerSocket != "/run/pod-vhu/vhost-3/sock" {
		t.Fatalf("containerDir from the pools file: %v %+v", err, s)
	}
	if s, err = p.resolveSlot(conf(`,"containerDir":"/var/run/vhu"`)); err != nil || s.ContainerSocket != "/var/run/vhu/vhost-3/sock" {
		t.Fatalf("the NAD's containerDir over the pool's: %v %+v", err, s)
	}
	p.PoolsFile = ""
	if n := s.PortName(); len(n) > 15 || !strings.HasPrefix(n, "vhu") {
		t.Fatalf("port name %q: want vhu..., at most 15 bytes", n)
	}
	// A client-mode pool cannot back a dpdkvhostuserclient port: say how to fix it.
	save("example.com/vhost", ModeClient)
	if _, err := p.resolveSlot(conf("")); err == nil || !strings.Contains(err.Error(), `vhostUser.mode to "server"`) {
		t.Fatalf("client-mode slot: %v", err)
	}
	save("example.com/vhost", ModeServer)
	save("other.org/vhost", ModeServer)
	if _, err := p.resolveSlot(conf("")); err == nil || !strings.Contains(err.Error(), "several pools") {
		t.Fatalf("ambiguous slot: %v", err)
	}
	s, err = p.resolveSlot(conf(`,"socketDir":"/srv/vhu"`))
	if err != nil || s.HostSocket != "/srv/vhu/vhost-3/sock" {
		t.Fatalf("socketDir: %v %+v", err, s)
	}
}

func TestResolveSlotRefusesLongSocketPaths(t *testing.T) {
	long := "/" + strings.Repeat("d", 100)
	c, err := LoadConf([]byte(withField("socketDir", `"`+long+`"`)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&Plugin{}).resolveSlot(c); err == nil || !strings.Contains(err.Error(), "over the 107") {
		t.Fatalf("long socket path: %v", err)
	}
}

func TestRemoveStaleSocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if err := removeStaleSocket(sock); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Fatalf("stale socket still there: %v", err)
	}
	if err := removeStaleSocket(sock); err != nil {
		t.Fatalf("a missing socket is fine: %v", err)
	}
	// A regular file is someone's data, not our socket.
	if err := os.WriteFile(sock, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := removeStaleSocket(sock); err == nil {
		t.Fatal("a regular file was removed")
	}
}

func TestParseMap(t *testing.T) {
	m, err := parseMap(`{multinet-container-id="c1", multinet-ifname=net1, vhost-server-path="/a b/c,d\"e"}`)
	if err != nil {
		t.Fatal(err)
	}
	if m["multinet-container-id"] != "c1" || m["multinet-ifname"] != "net1" || m["vhost-server-path"] != `/a b/c,d"e` {
		t.Fatalf("parsed %q", m)
	}
	if m, err := parseMap("{}"); err != nil || len(m) != 0 {
		t.Fatalf("empty map: %v %v", m, err)
	}
	for _, bad := range []string{"", "[]", `{a="x}`, "{a}"} {
		if _, err := parseMap(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func FuzzLoadConf(f *testing.F) {
	f.Add([]byte(goodConf))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := LoadConf(data)
		if err != nil {
			return
		}
		if c.Bridge == "" || c.VLAN < 0 || c.VLAN > 4094 || !strings.HasPrefix(c.OVSDB, "unix:") && !strings.Contains(c.OVSDB, ":") ||
			strings.Contains(c.DeviceID, "/") || strings.Contains(c.SocketName, "/") {
			t.Fatalf("accepted an invalid netconf: %+v", c)
		}
	})
}

// parseMap reads what ovs-vsctl prints; quote must round-trip through it.
func FuzzParseMap(f *testing.F) {
	f.Add("k", "v")
	f.Add("vhost-server-path", `/a "b",c=d`)
	f.Fuzz(func(t *testing.T, k, v string) {
		if k == "" || strings.ContainsAny(k, `=,"{} \`) {
			return
		}
		m, err := parseMap("{" + k + "=" + quote(v) + "}")
		if err != nil {
			t.Fatalf("%q=%q: %v", k, v, err)
		}
		if m[k] != v {
			t.Fatalf("round trip %q=%q gave %q", k, v, m)
		}
	})
}
