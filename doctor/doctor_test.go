package doctor_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/multinet-io/multinet/deviceplugin"
	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/doctor"
	"github.com/multinet-io/multinet/internal/netnstest"
	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/pci/pcitest"
	"github.com/multinet-io/multinet/sriovcni"
	"github.com/multinet-io/multinet/vfmanager"
)

// Debian's reference plugins (containernetworking-plugins, installed by hack/deps.sh).
const cniBinDir = "/usr/lib/cni"

const pfAddr = "0000:00:02.0"

// node is a simulated SR-IOV node: a private netns as the host with veths standing in for the
// PF and three VF netdevs, a fake sysfs tree shaped like the kernel's, the sriov plugin's state
// dir, a meta cache dir, a host-local dir and a kubelet checkpoint.
type node struct {
	t       *testing.T
	host    ns.NetNS
	tree    *pcitest.Tree
	p       *sriovcni.Plugin
	cfg     *doctor.Config
	ipamDir string
	origMAC map[string]string
}

func newNode(t *testing.T) *node {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and moves links between them")
	}
	if _, err := os.Stat(filepath.Join(cniBinDir, "host-local")); err != nil {
		t.Skipf("needs %s/host-local (hack/deps.sh installs containernetworking-plugins): %v", cniBinDir, err)
	}
	host := netnstest.New(t)
	tree := pcitest.New(t)
	tree.AddPF(pcitest.PF{Address: pfAddr, Vendor: "8086", Device: "10c9", Driver: "igb", Netdev: "mnpf0", TotalVFs: 7})
	n := &node{t: t, host: host, tree: tree, ipamDir: t.TempDir(), origMAC: map[string]string{}}
	// Veths for the PF and the VF netdevs: the dummy module may be missing, and neither reports VFs.
	netnstest.Veths(t, host, "mnpf0")
	n.origMAC = netnstest.Veths(t, host, "mnvf0", "mnvf1", "mnvf2")
	for i := 0; i < 3; i++ {
		tree.AddVF(pcitest.VF{PF: pfAddr, Index: i, Address: vf(i), Vendor: "8086", Device: "10ca", Driver: "igbvf", Netdev: fmt.Sprintf("mnvf%d", i)})
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	state := filepath.Join(t.TempDir(), "sriov")
	n.p = &sriovcni.Plugin{Sys: pci.New(tree.Root), StateDir: state, DevInfo: devinfo.Dir(t.TempDir()), Log: log}
	n.cfg = &doctor.Config{Sys: n.p.Sys, SriovStateDir: state, DevInfo: n.p.DevInfo, MetaCacheDir: t.TempDir(), IPAMDirs: []string{n.ipamDir},
		Checkpoint: filepath.Join(t.TempDir(), "kubelet_internal_checkpoint"), CNIPath: cniBinDir, Log: log}
	return n
}

func vf(i int) string { return fmt.Sprintf("0000:00:12.%d", i) }

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func (n *node) pod() ns.NetNS {
	n.t.Helper()
	p, err := testutils.NewNS()
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { p.Close(); testutils.UnmountNS(p) })
	return p
}

// attach runs the sriov plugin's ADD of VF i into the pod, and writes the meta-plugin's
// delegate cache for the container as the meta-plugin does before its delegates run.
func (n *node) attach(cid, podName string, pod ns.NetNS, i int) sriovcni.Args {
	n.t.Helper()
	conf := `{"cniVersion":"1.0.0","name":"sriov-net","type":"sriov","deviceID":"` + vf(i) + `",` +
		`"ipam":{"type":"host-local","subnet":"10.77.0.0/24","dataDir":"` + n.ipamDir + `"}}`
	a := sriovcni.Args{ContainerID: cid, Netns: pod.Path(), IfName: "net1", Path: cniBinDir, StdinData: []byte(conf)}
	if err := n.host.Do(func(ns.NetNS) error { _, err := n.p.Add(a); return err }); err != nil {
		n.t.Fatal(err)
	}
	mc := map[string]any{"containerID": cid, "netns": pod.Path(), "ifname": "eth0", "podNamespace": "default", "podName": podName,
		"podUID": "uid-" + podName, "delegates": []map[string]any{{"name": "default/sriov-net", "ifname": "net1", "deviceID": vf(i)}}}
	b, _ := json.Marshal(mc)
	os.MkdirAll(filepath.Join(n.cfg.MetaCacheDir, "delegates"), 0o700)
	if err := os.WriteFile(filepath.Join(n.cfg.MetaCacheDir, "delegates", cid+".json"), b, 0o600); err != nil {
		n.t.Fatal(err)
	}
	return a
}

// podDies does what the kernel does to a physical VF netdev when its pod's netns is destroyed
// without a DEL: the netdev returns to the host under its pod name.
func (n *node) podDies(pod ns.NetNS, i int) {
	n.t.Helper()
	err := pod.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("net1")
		if err != nil {
			return err
		}
		_ = netlink.LinkSetDown(l)
		return netlink.LinkSetNsFd(l, int(n.host.Fd()))
	})
	if err != nil {
		n.t.Fatal(err)
	}
	n.tree.SetNetdevs(vf(i), "net1")
	pod.Close()
	if err := testutils.UnmountNS(pod); err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) check() *doctor.Report {
	n.t.Helper()
	var r *doctor.Report
	err := n.host.Do(func(ns.NetNS) error {
		var err error
		r, err = doctor.Check(n.cfg)
		return err
	})
	if err != nil {
		n.t.Fatal(err)
	}
	return r
}

func kinds(r *doctor.Report) []string {
	var out []string
	for _, f := range r.Findings {
		out = append(out, f.Kind+" "+f.Subject)
	}
	sort.Strings(out)
	return out
}

func writeCheckpoint(t *testing.T, path string, owners map[string][]string) {
	t.Helper()
	type entry struct {
		PodUID        string
		ContainerName string
		ResourceName  string
		DeviceIDs     map[string][]string
	}
	var es []entry
	for uid, ids := range owners {
		es = append(es, entry{PodUID: uid, ContainerName: "app", ResourceName: "intel.com/sriov", DeviceIDs: map[string][]string{"-1": ids}})
	}
	b, _ := json.Marshal(map[string]any{"Data": map[string]any{"PodDeviceEntries": es, "RegisteredDevices": map[string][]string{}}, "Checksum": 0})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// makeSocket leaves a unix socket file at path, as a vswitch or a dead DPDK app does.
func makeSocket(t *testing.T, path string) {
	t.Helper()
	os.MkdirAll(filepath.Dir(path), 0o755)
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
}

// Two pods hold VFs, one vhost-user slot is allocated and another has a socket but no pod.
// doctor lists the holders from every source. Then pod A dies without a DEL: doctor reports its
// ownership record, delegate cache and lease as stale, a dry run changes nothing, --fix gives
// the VF back to the host as it was and releases the lease, and pod B is untouched.
func TestDoctorHoldersStaleAndFix(t *testing.T) {
	n := newNode(t)
	podA, podB := n.pod(), n.pod()
	n.attach("ctr-a", "cnf-a", podA, 0)
	b := n.attach("ctr-b", "cnf-b", podB, 1)
	slotDir := t.TempDir()
	dp, err := deviceplugin.Parse([]byte(`{"resourceList":[{"resourceName":"vhost","deviceType":"vhostUser","vhostUser":{"dir":"` + slotDir + `","count":2}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	n.cfg.DevicePlugin = dp
	writeCheckpoint(t, n.cfg.Checkpoint, map[string][]string{"uid-cnf-a": {vf(0), "vhost-0"}, "uid-cnf-b": {vf(1)}})
	makeSocket(t, filepath.Join(slotDir, "vhost-0", "sock"))
	makeSocket(t, filepath.Join(slotDir, "vhost-1", "sock"))

	r := n.check()
	if got := kinds(r); len(got) != 1 || got[0] != "stale-slot vhost-1" {
		t.Fatalf("findings on a healthy node = %v, want only the unallocated slot's socket", got)
	}
	byDev := map[string]doctor.Holding{}
	for _, h := range r.Holdings {
		byDev[h.Device] = h
	}
	if h := byDev[vf(0)]; h.Pod != "default/cnf-a" || h.PodUID != "uid-cnf-a" || h.ContainerID != "ctr-a" || h.PF != pfAddr ||
		!h.NetnsAlive || strings.Join(h.Source, ",") != "owner,cache,kubelet" {
		t.Errorf("holding of %s = %+v", vf(0), h)
	}
	if h := byDev["vhost-0"]; h.Kind != "vhost-user" || h.PodUID != "uid-cnf-a" {
		t.Errorf("holding of slot vhost-0 = %+v", h)
	}
	if _, ok := byDev[vf(2)]; ok {
		t.Errorf("free VF %s listed as held", vf(2))
	}

	n.podDies(podA, 0)
	// A lease of a container no record knows (a DEL that never ran its IPAM).
	os.MkdirAll(filepath.Join(n.ipamDir, "other"), 0o755)
	os.WriteFile(filepath.Join(n.ipamDir, "other", "10.9.0.9"), []byte("ghost\r\neth0"), 0o644)
	r = n.check()
	got := strings.Join(kinds(r), "\n")
	for _, want := range []string{"stale-owner " + vf(0), "stale-cache " + filepath.Join(n.cfg.MetaCacheDir, "delegates", "ctr-a.json"),
		"stale-lease " + filepath.Join(n.ipamDir, "other", "10.9.0.9"), "stale-lease " + filepath.Join(n.ipamDir, "sriov-net")} {
		if !strings.Contains(got, want) {
			t.Errorf("findings after pod A died:\n%s\nwant %s", got, want)
		}
	}
	if len(r.Findings) != 5 {
		t.Errorf("findings after pod A died: %d, want 5:\n%s", len(r.Findings), got)
	}

	before := snapshot(t, n)
	var steps []doctor.Step
	_ = n.host.Do(func(ns.NetNS) error { steps = doctor.Fix(n.cfg, r, true); return nil })
	if len(steps) != 4 || snapshot(t, n) != before {
		t.Fatalf("dry run: %d steps (want 4), state changed: %v", len(steps), snapshot(t, n) != before)
	}
	_ = n.host.Do(func(ns.NetNS) error { steps = doctor.Fix(n.cfg, r, false); return nil })
	for _, s := range steps {
		if !s.Done {
			t.Errorf("fix %s %s: %s", s.Finding.Kind, s.Finding.Subject, s.Err)
		}
	}
	if got := kinds(n.check()); len(got) != 1 || got[0] != "stale-slot vhost-1" {
		t.Errorf("findings after --fix = %v, want only the slot (left to an operator)", got)
	}
	var l netlink.Link
	_ = n.host.Do(func(ns.NetNS) error { l, _ = netlink.LinkByName("mnvf0"); return nil })
	if l == nil || l.Attrs().HardwareAddr.String() != n.origMAC["mnvf0"] {
		t.Errorf("VF 0 not back in the host as mnvf0 with its MAC: %v", l)
	}
	// Pod B still has its VF, lease and records; its DEL works.
	var inB netlink.Link
	_ = podB.Do(func(ns.NetNS) error { inB, _ = netlink.LinkByName("net1"); return nil })
	if inB == nil {
		t.Fatal("--fix took pod B's VF")
	}
	if err := n.host.Do(func(ns.NetNS) error { return n.p.Del(b) }); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(n.cfg.MetaCacheDir, "delegates", "ctr-b.json"))
	os.Remove(filepath.Join(slotDir, "vhost-1", "sock"))
	writeCheckpoint(t, n.cfg.Checkpoint, map[string][]string{"uid-cnf-a": {"vhost-0"}})
	if r := n.check(); !r.OK() {
		t.Errorf("findings after pod B's DEL: %v", kinds(r))
	}
}

// snapshot is every state file doctor reads and every host link, as one string.
func snapshot(t *testing.T, n *node) string {
	t.Helper()
	var out []string
	for _, d := range []string{n.cfg.SriovStateDir, n.cfg.MetaCacheDir, n.ipamDir} {
		filepath.Walk(d, func(p string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() {
				out = append(out, p)
			}
			return nil
		})
	}
	_ = n.host.Do(func(ns.NetNS) error {
		links, _ := netlink.LinkList()
		for _, l := range links {
			out = append(out, l.Attrs().Name+" "+l.Attrs().HardwareAddr.String())
		}
		return nil
	})
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// Records doctor cannot parse, the sriov plugin's quarantine and problem records, and a free
// VF still set up for a pod are each reported; none of them is "fixed" by guessing.
func TestDoctorReportsQuarantineProblemsCorruptAndSettings(t *testing.T) {
	n := newNode(t)
	state := n.cfg.SriovStateDir
	for _, d := range []string{"vf", "quarantine", "problems"} {
		os.MkdirAll(filepath.Join(state, d), 0o700)
	}
	os.WriteFile(filepath.Join(state, "vf", vf(2)+".json"), []byte(`{"containerID": "ctr-x", "ifN`), 0o600)
	os.WriteFile(filepath.Join(state, "quarantine", vf(1)+".json.1700000000"), []byte(`garbage`), 0o600)
	p, _ := json.Marshal(sriovcni.Problem{VF: vf(1), Reason: "ownership record corrupt", Left: "settings may be lost"})
	os.WriteFile(filepath.Join(state, "problems", "1700000000-"+vf(1)+".json"), p, 0o600)
	// The PF's VF list as the kernel reports it (veths report none): VF 0 kept a pod's VLAN.
	n.cfg.VFState = func(pf string, i int) (vfmanager.VFState, error) {
		if pf != "mnpf0" {
			return vfmanager.VFState{}, fmt.Errorf("no pf %s", pf)
		}
		if i == 0 {
			return vfmanager.VFState{VLAN: 100, SpoofChk: true, LinkState: "auto"}, nil
		}
		return vfmanager.VFState{SpoofChk: true, LinkState: "auto"}, nil
	}
	// The meta-plugin's problem record of a DEL that went past a delegate's failure.
	os.MkdirAll(filepath.Join(n.cfg.MetaCacheDir, "problems"), 0o700)
	os.WriteFile(filepath.Join(n.cfg.MetaCacheDir, "problems", "1700000001-ctr-y.json"),
		[]byte(`{"containerID":"ctr-y","pod":"default/y","network":"default/macvlan","ifName":"net2","reason":"macvlan DEL failed","left":"settings may be lost"}`), 0o600)
	r := n.check()
	got := kinds(r)
	want := []string{"problem " + filepath.Join(n.cfg.MetaCacheDir, "problems", "1700000001-ctr-y.json"),
		"problem " + filepath.Join(state, "problems", "1700000000-"+vf(1)+".json"),
		"quarantined " + filepath.Join(state, "quarantine", vf(1)+".json.1700000000"),
		"unreadable-record " + filepath.Join(state, "vf", vf(2)+".json"),
		"vf-settings " + vf(0)}
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("findings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, f := range r.Findings {
		if f.Kind != doctor.VFSettings && !strings.HasPrefix(f.Fix, "none") {
			t.Errorf("%s %s has an automatic fix %q", f.Kind, f.Subject, f.Fix)
		}
		if f.Kind == doctor.Problem && !strings.Contains(f.Detail, "settings may be lost") {
			t.Errorf("problem detail %q does not say what is left", f.Detail)
		}
	}
}
