package deviceplugin

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	dp "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/devpools"
	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/pci/pcitest"
)

// The device plugin publishes which PCI devices are in its pools, for the sriov plugin to refuse
// every other VF; the file follows config reloads.
func TestSecurityPoolsFileFollowsThePools(t *testing.T) {
	dinfo := devinfo.Dir(t.TempDir())
	_, d := fixture(t)
	cfg := filepath.Join(t.TempDir(), "config.json")
	pf := filepath.Join(t.TempDir(), "pools", "pools.json")
	if err := os.WriteFile(cfg, []byte(twoPools), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := New(Options{ConfigFile: cfg, DevInfo: dinfo, SysfsRoot: d.Sys.Root, PluginDir: t.TempDir(), DefaultRouteLinks: d.DefaultRouteLinks,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)), PoolsFile: pf})
	if err != nil {
		t.Fatal(err)
	}
	f, err := devpools.Read(pf)
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]string{vf0(0): "intel.com/iavf", vf0(3): "intel.com/iavf", vf1(2): "nvidia.com/dpdk",
		vf1(0): "", uplink: "", pf0: ""} {
		if got := f.PoolOf(addr); got != want {
			t.Errorf("pool of %s = %q, want %q", addr, got, want)
		}
	}
	if err := os.WriteFile(cfg, []byte(`{"resourceList":[{"resourceName":"dpdk","resourcePrefix":"nvidia.com","selectors":{"drivers":["vfio-pci"],"vendors":["15b3"]}}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	if f, err = devpools.Read(pf); err != nil {
		t.Fatal(err)
	}
	if got := f.PoolOf(vf0(0)); got != "" {
		t.Errorf("after the iavf pool was removed, %s is still in pool %q", vf0(0), got)
	}
	if got := f.PoolOf(vf1(3)); got != "nvidia.com/dpdk" {
		t.Errorf("pool of %s = %q after reload", vf1(3), got)
	}
}

// The device plugin's sockets were as open as the umask left them: with umask 0 any local user
// could call Allocate and make the plugin write device-info files and slot directories.
func TestSecuritySocketIs0600WhateverTheUmask(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	_, d := fixture(t)
	dir, err := os.MkdirTemp("", "mndp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := mustParse(t, twoPools)
	p := newPool(cfg.ResourceList[0], d.Sys, devinfo.Dir(t.TempDir()), slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	e, err := startEndpoint(p, dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(e.path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket %s mode %v, want a 0600 socket", e.path, fi.Mode())
	}
	es, _ := os.ReadDir(dir)
	if len(es) != 1 {
		t.Errorf("plugin dir has %v, want only the socket", es)
	}
	// It still serves.
	conn, err := grpc.NewClient("unix://"+e.path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := dp.NewDevicePluginClient(conn).GetDevicePluginOptions(ctx, &dp.Empty{}); err != nil {
		t.Fatalf("GetDevicePluginOptions: %v", err)
	}
	e.stop()
	if _, err := os.Lstat(e.path); !os.IsNotExist(err) {
		t.Errorf("socket after stop: %v", err)
	}
}

// The uplink rule only knew IPv4 default routes and the link named in the route: a NIC under
// the bond carrying the default route, or one carrying only an IPv6 default route, was pooled
// and could be given to a pod.
func TestSecurityUplinkExclusionIPv6AndBond(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace, links and routes")
	}
	host, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Close(); testutils.UnmountNS(host) })
	tr := pcitest.New(t)
	nics := []string{"mnbp0", "mnbp1", "mnv6up", "mnvl0", "mndata0"}
	for i, name := range nics {
		tr.AddNIC(pcitest.NIC{Address: fmt.Sprintf("0000:00:%02x.0", 3+i), Vendor: "8086", Device: "15bb", Driver: "e1000e", Netdev: name, NUMANode: -1})
	}
	d := &Discoverer{Sys: pci.New(tr.Root)}
	var got []*Device
	err = host.Do(func(ns.NetNS) error {
		for _, name := range nics {
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
				return err
			}
		}
		// IPv4 default over a bridge (a bond behaves the same: its ports have it as master)
		// with two ports; IPv6 default over mnv6up; another IPv6 default over a macvlan on mnvl0.
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "mnbr0"}}
		if err := netlink.LinkAdd(br); err != nil {
			return err
		}
		for _, name := range []string{"mnbp0", "mnbp1"} {
			l, _ := netlink.LinkByName(name)
			if err := netlink.LinkSetMaster(l, br); err != nil {
				return err
			}
		}
		// A macvlan: the 8021q module may be missing; VLANs are followed to their parent alike.
		vl0, _ := netlink.LinkByName("mnvl0")
		mv := &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: "mnvl0.7", ParentIndex: vl0.Attrs().Index}, Mode: netlink.MACVLAN_MODE_BRIDGE}
		if err := netlink.LinkAdd(mv); err != nil {
			return err
		}
		for _, name := range append(nics, "mnbr0", "mnvl0.7") {
			l, _ := netlink.LinkByName(name)
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		brl, _ := netlink.LinkByName("mnbr0")
		a4, _ := netlink.ParseAddr("192.0.2.2/24")
		if err := netlink.AddrAdd(brl, a4); err != nil {
			return err
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: brl.Attrs().Index, Gw: net.ParseIP("192.0.2.1")}); err != nil {
			return fmt.Errorf("v4 default: %w", err)
		}
		for _, r := range []struct{ link, gw string }{{"mnv6up", "fe80::1"}, {"mnvl0.7", "fe80::2"}} {
			l, _ := netlink.LinkByName(r.link)
			_, all, _ := net.ParseCIDR("::/0")
			if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: all, Gw: net.ParseIP(r.gw), Priority: 1024 + l.Attrs().Index}); err != nil {
				return fmt.Errorf("v6 default via %s: %w", r.link, err)
			}
		}
		found, err := d.Discover(mustParse(t, `{"resourceList":[{"resourceName":"nics","selectors":{"vendors":["8086"]}}]}`))
		got = found["intel.com/nics"]
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if g := ids(got); len(g) != 1 || g[0] != "0000:00:07.0" {
		t.Errorf("pool = %v, want only 0000:00:07.0 (mndata0): the others carry or are under a default route", g)
	}
}

// A vhost-user slot was handed to the next pod with whatever the last one left in it, symlinks
// included. Allocate now empties it first, removing links as links (never what they point to)
// and keeping only a client-mode slot's socket, which the host side owns.
func TestSecurityVhostSlotEmptiedBeforeReuse(t *testing.T) {
	for _, mode := range []string{VhostServer, VhostClient} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			outside := t.TempDir()
			secret := filepath.Join(outside, "secret")
			if err := os.WriteFile(secret, []byte("host data"), 0o600); err != nil {
				t.Fatal(err)
			}
			_, pools := testPools(t, `{"resourceList":[{"resourceName":"vhost","resourcePrefix":"multinet.io","deviceType":"vhostUser","vhostUser":{"dir":"`+dir+`","count":2,"mode":"`+mode+`"}}]}`)
			p := pools["multinet.io/vhost"]
			allocate(t, p, "vhost-0")
			slot := filepath.Join(dir, "vhost-0")
			// The first pod leaves files, a directory, symlinks out of the slot, and (client
			// mode) the host side's socket is there.
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			must(os.WriteFile(filepath.Join(slot, "leftover"), []byte("x"), 0o644))
			must(os.MkdirAll(filepath.Join(slot, "d", "e"), 0o755))
			must(os.WriteFile(filepath.Join(slot, "d", "e", "f"), []byte("x"), 0o644))
			must(os.Symlink(secret, filepath.Join(slot, "escape")))
			must(os.Symlink(outside, filepath.Join(slot, "d", "escapedir")))
			sock := filepath.Join(slot, "sock")
			if mode == VhostClient {
				l, err := net.Listen("unix", sock)
				must(err)
				defer l.Close()
			} else {
				must(os.Symlink(secret, sock)) // the next pod would bind over, or open, the host file
			}

			allocate(t, p, "vhost-0")
			es, err := os.ReadDir(slot)
			must(err)
			var left []string
			for _, e := range es {
				left = append(left, e.Name())
			}
			want := 0
			if mode == VhostClient {
				want = 1
			}
			if len(left) != want || (want == 1 && left[0] != "sock") {
				t.Errorf("slot after re-allocation holds %v", left)
			}
			if b, err := os.ReadFile(secret); err != nil || string(b) != "host data" {
				t.Errorf("the file a symlink pointed at: %q, %v", b, err)
			}
			if es, _ := os.ReadDir(outside); len(es) != 1 {
				t.Errorf("the directory a symlink pointed at now holds %v", es)
			}
		})
	}
}

// A slot whose server-mode socket still accepts connections is in use by a live process: the
// allocation is refused rather than the socket pulled away from it.
func TestSecurityVhostSlotInUseNotWiped(t *testing.T) {
	dir, err := os.MkdirTemp("", "mnvh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	_, pools := testPools(t, `{"resourceList":[{"resourceName":"vhost","resourcePrefix":"multinet.io","deviceType":"vhostUser","vhostUser":{"dir":"`+dir+`","count":1,"mode":"server"}}]}`)
	p := pools["multinet.io/vhost"]
	allocate(t, p, "vhost-0")
	l, err := net.Listen("unix", filepath.Join(dir, "vhost-0", "sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = p.Allocate(context.Background(), &dp.AllocateRequest{ContainerRequests: []*dp.ContainerAllocateRequest{{DevicesIds: []string{"vhost-0"}}}})
	if err == nil || !strings.Contains(err.Error(), "a process still serves its socket") {
		t.Fatalf("Allocate of a slot in use: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "vhost-0", "sock")); err != nil {
		t.Errorf("the live socket was removed: %v", err)
	}
}

// A vhostUser pool's slot directories are published too: the vhost-user plugin learns from
// the pools file where the pod sees a slot, so a NAD need not repeat the pool's containerDir.
func TestPoolsFilePublishesVhostContainerDir(t *testing.T) {
	_, d := fixture(t)
	cfg := filepath.Join(t.TempDir(), "config.json")
	pf := filepath.Join(t.TempDir(), "pools.json")
	vdir := t.TempDir()
	if err := os.WriteFile(cfg, []byte(`{"resourceList":[{"resourceName":"vhost","resourcePrefix":"multinet.io","deviceType":"vhostUser",
	  "vhostUser":{"dir":"`+vdir+`","count":2,"mode":"server","containerDir":"/var/run/vhu"}}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{ConfigFile: cfg, DevInfo: devinfo.Dir(t.TempDir()), SysfsRoot: d.Sys.Root, PluginDir: t.TempDir(),
		DefaultRouteLinks: d.DefaultRouteLinks, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)), PoolsFile: pf}); err != nil {
		t.Fatal(err)
	}
	f, err := devpools.Read(pf)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := f.VhostPoolAt(vdir); !ok || v.ContainerDir != "/var/run/vhu" || f.VhostUser["multinet.io/vhost"] != v {
		t.Fatalf("pools file vhostUser = %+v, want multinet.io/vhost at %s seen in the pod at /var/run/vhu", f.VhostUser, vdir)
	}
}
