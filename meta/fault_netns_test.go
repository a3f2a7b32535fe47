package meta_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/multinet-io/multinet/doctor"
	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/pci/pcitest"
)

// The fault table of issue 17: each test injects one fault into real ADDs and DELs on a
// simulated node and fails when anything is left behind (netdevs, leases, caches, ownership
// records, VFs off the host) or when an operation blocks.

// vfNode adds a PF with k veth-backed VFs (named vfN in the host) to the node, the sriov NADs
// sriov-a and sriov-b, the macvlan NADs macvlan-a and macvlan-b, and a kubelet checkpoint.
type vfNode struct {
	*node
	tree  *pcitest.Tree
	vfs   []string          // VF addresses, in order
	names map[string]string // VF address -> host netdev
	macs  map[string]string // host netdev -> original MAC
	state string            // MULTINET_STATE_DIR
}

func faultNode(t *testing.T, k int) *vfNode {
	t.Helper()
	n := newNode(t)
	v := &vfNode{node: n, names: map[string]string{}, macs: map[string]string{}, state: filepath.Join(n.dir, "state")}
	v.tree = pcitest.New(t)
	v.tree.AddPF(pcitest.PF{Address: "0000:00:02.0", Vendor: "8086", Device: "1593", Driver: "ice", Netdev: "mnpf0", TotalVFs: k})
	err := n.host.Do(func(ns.NetNS) error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "mnpf0"}, PeerName: "mnpf0p"}); err != nil {
			return err
		}
		for i := 0; i < k; i++ {
			name := fmt.Sprintf("vf%d", i)
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
				return err
			}
			l, _ := netlink.LinkByName(name)
			v.macs[name] = l.Attrs().HardwareAddr.String()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < k; i++ {
		addr := fmt.Sprintf("0000:00:%02x.%d", 0x10+i/8, i%8)
		v.tree.AddVF(pcitest.VF{PF: "0000:00:02.0", Index: i, Address: addr, Vendor: "8086", Device: "1889", Driver: "iavf", Netdev: fmt.Sprintf("vf%d", i)})
		v.vfs = append(v.vfs, addr)
		v.names[addr] = fmt.Sprintf("vf%d", i)
	}
	t.Setenv("MULTINET_SYSFS_ROOT", v.tree.Root)
	t.Setenv("MULTINET_STATE_DIR", v.state)
	for i, name := range []string{"sriov-a", "sriov-b"} {
		n.nad("default", name, fmt.Sprintf(`{"cniVersion": "1.0.0", "type": "sriov",
		  "ipam": {"type": "host-local", "dataDir": %q, "subnet": "10.%d.0.0/16"}}`, n.ipamDir, 56+i),
			map[string]string{"k8s.v1.cni.cncf.io/resourceName": "intel.com/vf"})
	}
	n.nad("default", "macvlan-a", n.macvlanConf("macvlan-a", "192.168.10.0/24"), nil)
	n.nad("default", "macvlan-b", n.macvlanConf("macvlan-b", "192.168.11.0/24"), nil)
	v.checkpoint(nil)
	n.conf = n.multinetConf(map[string]interface{}{"networkDir": n.netDir, "kubeletCheckpoint": v.checkpointPath(),
		"podResourcesSocket": filepath.Join(n.dir, "no-kubelet.sock")})
	return v
}

func (v *vfNode) checkpointPath() string { return filepath.Join(v.dir, "kubelet_internal_checkpoint") }

// checkpoint writes kubelet's checkpoint: pod UID -> the VFs kubelet gave it.
func (v *vfNode) checkpoint(alloc map[string][]string) {
	v.t.Helper()
	var es []string
	uids := make([]string, 0, len(alloc))
	for uid := range alloc {
		uids = append(uids, uid)
	}
	sort.Strings(uids)
	for _, uid := range uids {
		es = append(es, fmt.Sprintf(`{"PodUID":%q,"ContainerName":"app","ResourceName":"intel.com/vf","DeviceIDs":{"-1":["%s"]}}`,
			uid, strings.Join(alloc[uid], `","`)))
	}
	tmp := v.checkpointPath() + ".tmp"
	if err := os.WriteFile(tmp, []byte(`{"Data":{"PodDeviceEntries":[`+strings.Join(es, ",")+`]},"Checksum":1}`), 0o600); err != nil {
		v.t.Fatal(err)
	}
	if err := os.Rename(tmp, v.checkpointPath()); err != nil {
		v.t.Fatal(err)
	}
}

// vfPod is a pod with networks and, for its sriov networks, the VFs kubelet gave it.
func (v *vfNode) vfPod(name, networks string, vfs ...string) *pod {
	return v.pod(name, networks, [2]string{"K8S_POD_UID", "uid-" + name})
}

func (v *vfNode) doctorConfig() *doctor.Config {
	return &doctor.Config{Sys: pci.New(v.tree.Root), SriovStateDir: filepath.Join(v.state, "sriov"), MetaCacheDir: v.cacheDir,
		IPAMDirs: []string{v.ipamDir}}
}

// sriovStateFiles lists the sriov plugin's attachment caches and ownership records.
func (v *vfNode) sriovStateFiles() []string {
	var out []string
	for _, d := range []string{"cache", "vf"} {
		m, _ := filepath.Glob(filepath.Join(v.state, "sriov", d, "*"))
		out = append(out, m...)
	}
	return out
}

// assertNothingLeft checks what an operator would after the pods are gone: every VF netdev back
// in the host under its name with its MAC, the pods without interfaces, no lease, no delegate
// cache, no sriov record, and doctor finding nothing stale.
func (v *vfNode) assertNothingLeft(pods ...*pod) {
	v.t.Helper()
	_ = v.host.Do(func(ns.NetNS) error {
		for _, addr := range v.vfs {
			name := v.names[addr]
			l, err := netlink.LinkByName(name)
			if err != nil {
				v.t.Errorf("VF %s: %s not back in the host: %v", addr, name, err)
			} else if l.Attrs().HardwareAddr.String() != v.macs[name] {
				v.t.Errorf("VF %s: %s has mac %s, want the original %s", addr, name, l.Attrs().HardwareAddr, v.macs[name])
			}
		}
		links, _ := netlink.LinkList()
		for _, l := range links {
			if n := l.Attrs().Name; strings.HasPrefix(n, "net") || strings.HasPrefix(n, "mnv") {
				v.t.Errorf("host has a leftover link %s", n)
			}
		}
		return nil
	})
	for _, p := range pods {
		if p.ns == nil || !netnsExists(p.ns.Path()) {
			continue
		}
		if got := keys(p.links()); len(got) != 0 {
			v.t.Errorf("pod %s still has %v", p.rt.ContainerID, got)
		}
	}
	if l := v.leases(); len(l) != 0 {
		v.t.Errorf("leases left: %v", l)
	}
	if c := v.cacheFiles(); len(c) != 0 {
		v.t.Errorf("delegate caches left: %v", c)
	}
	if s := v.sriovStateFiles(); len(s) != 0 {
		v.t.Errorf("sriov records left: %v", s)
	}
	var r *doctor.Report
	_ = v.host.Do(func(ns.NetNS) error {
		var err error
		r, err = doctor.Check(v.doctorConfig())
		return err
	})
	if r != nil && !r.OK() {
		for _, f := range r.Findings {
			v.t.Errorf("doctor: %s %s: %s", f.Kind, f.Subject, f.Detail)
		}
	}
}

func netnsExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// A delegate failing at attachment k of N, for every k: the ADD fails naming it, everything
// attached before it (VFs, macvlans, the cluster network, their leases) is undone, and a pod
// with the same networks then attaches on the same VFs.
func TestFaultDelegateFailsAtEveryAttachment(t *testing.T) {
	v := faultNode(t, 4)
	v.nad("default", "broken", `{"cniVersion": "1.0.0", "name": "broken", "type": "macvlan", "master": "nosuchdev",
	  "ipam": {"type": "host-local", "dataDir": "`+v.ipamDir+`", "subnet": "192.168.9.0/24"}}`, nil)
	nets := []string{"sriov-a", "macvlan-a", "sriov-b", "macvlan-b"}
	var pods []*pod
	for k := 0; k <= len(nets); k++ {
		list := append(append(append([]string{}, nets[:k]...), "broken"), nets[k:]...)
		name := fmt.Sprintf("k%d", k)
		v.checkpoint(map[string][]string{"uid-" + name: v.vfs[:2]})
		p := v.vfPod(name, strings.Join(list, ","))
		pods = append(pods, p)
		_, err := p.add()
		if want := fmt.Sprintf("network default/broken on net%d", k+1); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("k=%d: ADD err = %v, want %q", k, err, want)
		}
		v.assertNothingLeft(p)
		if t.Failed() {
			t.Fatalf("k=%d: failed ADD left state behind", k)
		}
	}
	p := v.vfPod("ok", strings.Join(nets, ","))
	v.checkpoint(map[string][]string{"uid-ok": v.vfs[:2]})
	if _, err := p.add(); err != nil {
		t.Fatalf("ADD after the failed ones: %v", err)
	}
	if got := keys(p.links()); strings.Join(got, ",") != "eth0,net1,net2,net3,net4" {
		t.Errorf("pod interfaces %v", got)
	}
	if err := p.del(); err != nil {
		t.Fatal(err)
	}
	v.assertNothingLeft(append(pods, p)...)
}

// Corrupt and truncated records: after a pod's ADD its delegate cache, the sriov plugin's
// attachment cache or the VF's ownership record is truncated or overwritten with garbage.
// The runtime's DEL still gives the VFs back and releases every lease; what could not be read
// is quarantined and reported by doctor, and nothing else is.
func TestFaultCorruptRecordsDelCleansUp(t *testing.T) {
	for _, tc := range []struct{ name, file, content string }{
		{"delegate cache truncated", "meta", `{"containerID": "ctr-p", "netns": "/var/run/net`},
		{"delegate cache garbage", "meta", "\x00\x00\x00"},
		{"sriov cache truncated", "cache", `{"containerID": "ctr-p", "ifName": "ne`},
		{"ownership record truncated", "vf", `{"containerID"`},
		{"ownership record empty", "vf", ``},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := faultNode(t, 2)
			v.checkpoint(map[string][]string{"uid-p": v.vfs})
			p := v.vfPod("p", "sriov-a,macvlan-a,sriov-b")
			if _, err := p.add(); err != nil {
				t.Fatal(err)
			}
			var files []string
			switch tc.file {
			case "meta":
				files = v.cacheFiles()
			default:
				files, _ = filepath.Glob(filepath.Join(v.state, "sriov", tc.file, "*.json"))
			}
			if len(files) == 0 {
				t.Fatalf("no %s record to corrupt", tc.file)
			}
			if err := os.WriteFile(files[0], []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := p.del(); err != nil {
				t.Fatalf("DEL with a corrupt %s: %v", tc.file, err)
			}
			// What doctor reports now: at most the quarantined file and its problem record.
			var r *doctor.Report
			_ = v.host.Do(func(ns.NetNS) error { r, _ = doctor.Check(v.doctorConfig()); return nil })
			for _, f := range r.Findings {
				if f.Kind != doctor.Quarantined && f.Kind != doctor.Problem {
					t.Errorf("doctor after DEL: %s %s: %s", f.Kind, f.Subject, f.Detail)
				}
			}
			os.RemoveAll(filepath.Join(v.state, "sriov", "quarantine"))
			os.RemoveAll(filepath.Join(v.state, "sriov", "problems"))
			v.assertNothingLeft(p)
		})
	}
}

// mountTiny mounts a small tmpfs on dir for the test's duration.
func mountTiny(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=512k,mode=0700"); err != nil {
		t.Skipf("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
}

// fill writes into dir until the filesystem is full and returns the filler's path.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatal(err)
			}
			return path
		}
	}
}

// The state directory full (a tiny tmpfs, for the sriov plugin's state and for the
// meta-plugin's cache in turn): a new pod's ADD fails with a clear error and attaches nothing,
// no record is left half-written, and the DELs of the pod attached before and of the failed
// one still work.
func TestFaultStateDirFull(t *testing.T) {
	for _, which := range []string{"sriov state", "meta cache"} {
		t.Run(which, func(t *testing.T) {
			v := faultNode(t, 2)
			dir := v.state
			if which == "meta cache" {
				dir = v.cacheDir
			}
			mountTiny(t, dir)
			v.checkpoint(map[string][]string{"uid-a": v.vfs[:1], "uid-b": v.vfs[1:]})
			a := v.vfPod("a", "sriov-a,macvlan-a")
			if _, err := a.add(); err != nil {
				t.Fatal(err)
			}
			filler := fill(t, dir)
			b := v.vfPod("b", "macvlan-b,sriov-a")
			_, err := b.add()
			if err == nil || !strings.Contains(err.Error(), "no space left on device") {
				t.Fatalf("ADD with %s full: err = %v, want no space left on device", which, err)
			}
			if got := keys(b.links()); len(got) != 0 {
				t.Errorf("failed pod has %v", got)
			}
			filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
				if err != nil || fi.IsDir() || path == filler || strings.HasSuffix(path, ".lock") {
					return nil
				}
				b, rerr := os.ReadFile(path)
				if rerr != nil || !json.Valid(b) {
					t.Errorf("half-written state file %s (%d bytes): %v", path, len(b), rerr)
				}
				return nil
			})
			if err := a.del(); err != nil {
				t.Errorf("DEL of the pod attached before, %s full: %v", which, err)
			}
			if err := b.del(); err != nil {
				t.Errorf("DEL of the failed pod, %s full: %v", which, err)
			}
			os.Remove(filler)
			v.assertNothingLeft(a, b)
		})
	}
}

// reboot does to the node what a reboot does: every pod netns is gone, the VF netdevs are back
// in the host (under the pod's names, or the kernel's devN when that is taken), the state
// directories, leases and caches are kept.
func (v *vfNode) reboot(pods ...*pod) {
	v.t.Helper()
	seq := 0
	for _, p := range pods {
		err := p.ns.Do(func(host ns.NetNS) error {
			links, err := netlink.LinkList()
			if err != nil {
				return err
			}
			for _, l := range links {
				addr := ""
				for a, name := range v.names {
					if l.Attrs().HardwareAddr.String() == v.macs[name] {
						addr = a
					}
				}
				if addr == "" {
					continue // not a VF: dies with the netns
				}
				name := l.Attrs().Name
				netlink.LinkSetDown(l)
				if hl := link(v.host, name); hl != nil {
					seq++
					name = fmt.Sprintf("dev%d", seq)
					if err := netlink.LinkSetName(l, name); err != nil {
						return err
					}
				}
				if err := netlink.LinkSetNsFd(l, int(v.host.Fd())); err != nil {
					return err
				}
				v.tree.SetNetdevs(addr, name)
			}
			return nil
		})
		if err != nil {
			v.t.Fatal(err)
		}
		p.ns.Close()
		if err := testutils.UnmountNS(p.ns); err != nil {
			v.t.Fatal(err)
		}
	}
}

func link(where ns.NetNS, name string) netlink.Link {
	var l netlink.Link
	_ = where.Do(func(ns.NetNS) error { l, _ = netlink.LinkByName(name); return nil })
	return l
}

// A node reboot: the old pods' DELs (the runtime's, for sandboxes it remembers) succeed
// without their netns, every VF gets its name and MAC back, every lease is released, and new
// pods get the same VFs.
func TestFaultNodeReboot(t *testing.T) {
	v := faultNode(t, 3)
	v.checkpoint(map[string][]string{"uid-a": v.vfs[:2], "uid-b": v.vfs[2:]})
	a := v.vfPod("a", "sriov-a,macvlan-a,sriov-b")
	b := v.vfPod("b", "sriov-a")
	for _, p := range []*pod{a, b} {
		if _, err := p.add(); err != nil {
			t.Fatal(err)
		}
	}
	v.reboot(a, b)
	for _, p := range []*pod{a, b} {
		if err := p.del(); err != nil {
			t.Errorf("DEL of %s after the reboot: %v", p.rt.ContainerID, err)
		}
	}
	for addr := range v.names {
		v.tree.SetNetdevs(addr, v.names[addr])
	}
	v.assertNothingLeft()
	c := v.vfPod("c", "sriov-a,sriov-b,sriov-a")
	v.checkpoint(map[string][]string{"uid-c": v.vfs})
	if _, err := c.add(); err != nil {
		t.Fatalf("new pod after the reboot: %v", err)
	}
	if got := keys(c.links()); strings.Join(got, ",") != "eth0,net1,net2,net3" {
		t.Errorf("new pod interfaces %v", got)
	}
	if err := c.del(); err != nil {
		t.Fatal(err)
	}
	v.assertNothingLeft(c)
}

// 64 pods attach at once, four for each of 16 VFs (each names its VF in its selection): exactly
// 16 ADDs succeed, no VF is in two pods, the 48 others fail saying who holds their VF and leave
// nothing in their pod, and after every pod's DEL nothing is left.
func TestFault64ConcurrentAddsOn16VFs(t *testing.T) {
	v := faultNode(t, 16)
	v.nad("default", "sriov-any", `{"cniVersion": "1.0.0", "type": "sriov",
	  "ipam": {"type": "host-local", "dataDir": "`+v.ipamDir+`", "subnet": "10.60.0.0/16"}}`, nil)
	const n = 64
	pods := make([]*pod, n)
	for i := range pods {
		pods[i] = v.vfPod(fmt.Sprintf("c%d", i), fmt.Sprintf(`[{"name": "sriov-any", "deviceID": %q}]`, v.vfs[i%16]))
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, p := range pods {
		wg.Add(1)
		go func() { defer wg.Done(); _, errs[i] = p.add() }()
	}
	wg.Wait()
	holder := map[string]string{} // VF netdev's MAC -> pod
	ok := 0
	for i, p := range pods {
		got := keys(p.links())
		if errs[i] == nil {
			ok++
			if strings.Join(got, ",") != "eth0,net1" {
				t.Errorf("pod %d: interfaces %v", i, got)
			}
			_ = p.ns.Do(func(ns.NetNS) error {
				l, err := netlink.LinkByName("net1")
				if err != nil {
					return err
				}
				mac := l.Attrs().HardwareAddr.String()
				if mac != v.macs[v.names[v.vfs[i%16]]] {
					t.Errorf("pod %d: net1 is not its VF %s", i, v.vfs[i%16])
				}
				if other, dup := holder[mac]; dup {
					t.Errorf("VF %s in pods %s and %d", v.vfs[i%16], other, i)
				}
				holder[mac] = fmt.Sprint(i)
				return nil
			})
			continue
		}
		if !strings.Contains(errs[i].Error(), "in use by container ctr-c") || !strings.Contains(errs[i].Error(), v.vfs[i%16]) {
			t.Errorf("pod %d: error %q does not name the VF and its holder", i, errs[i])
		}
		if len(got) != 0 {
			t.Errorf("failed pod %d has %v", i, got)
		}
	}
	if ok != 16 {
		t.Errorf("%d ADDs succeeded, want 16", ok)
	}
	for i, p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.del(); err != nil {
				t.Errorf("DEL of pod %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	v.assertNothingLeft(pods...)
}

// killerBin is a CNI bin dir with a delegate type "killer" whose ADD SIGKILLs the process that
// ran it (the thin plugin), as the OOM killer or a runtime's timeout would, then fails itself.
func (v *vfNode) killerBin() string {
	v.t.Helper()
	dir := filepath.Join(v.dir, "killer-bin")
	os.MkdirAll(dir, 0o755)
	script := "#!/bin/sh\n[ \"$CNI_COMMAND\" = VERSION ] && { echo '{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"0.3.1\",\"0.4.0\",\"1.0.0\"]}'; exit 0; }\n" +
		"[ \"$CNI_COMMAND\" = ADD ] || exit 0\nkill -9 $PPID\nexit 1\n"
	if err := os.WriteFile(filepath.Join(dir, "killer"), []byte(script), 0o755); err != nil {
		v.t.Fatal(err)
	}
	v.nad("default", "killer", `{"cniVersion": "1.0.0", "name": "killer", "type": "killer"}`, nil)
	return dir
}

// The thin plugin SIGKILLed while its delegate k runs, for every k (before, between and after
// the VF and macvlan attachments): the runtime's DEL then leaves nothing.
func TestFaultThinPluginKilledAtEachAttachment(t *testing.T) {
	v := faultNode(t, 2)
	killer := v.killerBin()
	nets := []string{"sriov-a", "macvlan-a", "sriov-b"}
	var pods []*pod
	for k := 0; k <= len(nets); k++ {
		list := append(append(append([]string{}, nets[:k]...), "killer"), nets[k:]...)
		name := fmt.Sprintf("k%d", k)
		v.checkpoint(map[string][]string{"uid-" + name: v.vfs})
		p := v.vfPod(name, strings.Join(list, ","))
		p.cni = libcni.NewCNIConfigWithCacheDir([]string{filepath.Dir(multinetBin), refPlugins, killer}, v.rtCache, nil)
		pods = append(pods, p)
		if _, err := p.add(); err == nil || !strings.Contains(err.Error(), "signal: killed") {
			t.Fatalf("k=%d: ADD err = %v, want the plugin killed", k, err)
		}
		if err := p.del(); err != nil {
			t.Fatalf("k=%d: the runtime's DEL after the kill: %v", k, err)
		}
		v.assertNothingLeft(p)
		if t.Failed() {
			t.Fatalf("k=%d: the kill left state behind", k)
		}
	}
}

// The thin plugin SIGKILLed at random points of a pod's ADD (20 trials spread over its whole
// duration): once the delegates it had started have exited, the runtime's DEL leaves nothing.
func TestFaultThinPluginKilledAtRandomPoints(t *testing.T) {
	v := faultNode(t, 2)
	v.checkpoint(map[string][]string{"uid-r": v.vfs})
	var plugin map[string]any
	var list map[string]any
	json.Unmarshal(v.conf, &list)
	plugin = list["plugins"].([]any)[0].(map[string]any)
	plugin["cniVersion"], plugin["name"] = list["cniVersion"], list["name"]
	stdin, _ := json.Marshal(plugin)
	run := func(p *pod, kill time.Duration) error {
		cmd := exec.Command(multinetBin)
		cmd.Env = append(os.Environ(), "CNI_COMMAND=ADD", "CNI_CONTAINERID="+p.rt.ContainerID, "CNI_NETNS="+p.rt.NetNS,
			"CNI_IFNAME=eth0", "CNI_PATH="+filepath.Dir(multinetBin)+":"+refPlugins, "CNI_ARGS="+cniArgs(p.rt.Args))
		cmd.Stdin = bytes.NewReader(stdin)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		var err error
		_ = v.host.Do(func(ns.NetNS) error { err = cmd.Start(); return nil })
		if err != nil {
			return err
		}
		if kill >= 0 {
			time.Sleep(kill)
			cmd.Process.Signal(syscall.SIGKILL)
		}
		err = cmd.Wait()
		// The delegates it started finish on their own (a runtime's DEL comes after its
		// timeout); wait for them, bounded.
		for start := time.Now(); unix.Kill(-cmd.Process.Pid, 0) == nil; time.Sleep(10 * time.Millisecond) {
			if time.Since(start) > 30*time.Second {
				t.Fatal("delegates of the killed plugin still running after 30s")
			}
		}
		return err
	}
	// One ADD without a kill: how long the whole ADD takes here.
	p := v.vfPod("r", "sriov-a,macvlan-a,sriov-b")
	start := time.Now()
	if err := run(p, -1); err != nil {
		t.Fatal(err)
	}
	full := time.Since(start)
	if err := p.del(); err != nil {
		t.Fatal(err)
	}
	v.assertNothingLeft(p)
	rng := rand.New(rand.NewPCG(17, uint64(time.Now().UnixNano())))
	for i := 0; i < 20; i++ {
		at := time.Duration(rng.Int64N(int64(full)))
		p := v.vfPod("r", "sriov-a,macvlan-a,sriov-b")
		err := run(p, at)
		if err := p.del(); err != nil {
			t.Fatalf("trial %d (killed after %s of %s, ADD: %v): DEL: %v", i, at, full, err, err)
		}
		v.assertNothingLeft(p)
		if t.Failed() {
			t.Fatalf("trial %d: killed after %s of %s (ADD: %v): state left behind", i, at, full, err)
		}
	}
}

func cniArgs(args [][2]string) string {
	var s []string
	for _, a := range args {
		s = append(s, a[0]+"="+a[1])
	}
	return strings.Join(s, ";")
}

// apiDownConf is the node's multinet conf in API mode with the API server down (nothing
// listens on its port).
func (v *vfNode) apiDownConf() []byte {
	v.t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		v.t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	kc := filepath.Join(v.dir, "kubeconfig")
	os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://`+addr+`", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600)
	return v.multinetConf(map[string]interface{}{"kubeconfig": kc, "kubeletCheckpoint": v.checkpointPath(),
		"podResourcesSocket": filepath.Join(v.dir, "no-kubelet.sock")})
}

// The API server down during ADD: the ADD fails in bounded time saying it could not reach the
// API server and attaches nothing (not even the cluster network). During DEL (of a pod whose
// ADD went through): the DEL works from the delegate cache and leaves nothing.
func TestFaultAPIServerDown(t *testing.T) {
	v := faultNode(t, 2)
	v.checkpoint(map[string][]string{"uid-a": v.vfs[:1], "uid-b": v.vfs[1:]})
	down := v.apiDownConf()

	a := v.vfPod("a", "sriov-a,macvlan-a")
	a.list, _ = libcni.ConfListFromBytes(down)
	start := time.Now()
	_, err := a.add()
	if err == nil || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "default/a") {
		t.Fatalf("ADD with the API server down: err = %v, want it to name the pod and the refused connection", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("ADD with the API server down took %s", d)
	}
	if got := keys(a.links()); len(got) != 0 {
		t.Errorf("pod has %v after the failed ADD", got)
	}
	if err := a.del(); err != nil {
		t.Errorf("DEL of the failed ADD: %v", err)
	}
	v.assertNothingLeft(a)

	b := v.vfPod("b", "sriov-a,macvlan-a")
	if _, err := b.add(); err != nil {
		t.Fatal(err)
	}
	b.list, _ = libcni.ConfListFromBytes(down) // the API server goes down before the pod's DEL
	if err := b.del(); err != nil {
		t.Fatalf("DEL with the API server down: %v", err)
	}
	v.assertNothingLeft(b)
}

// The sriov plugin SIGKILLed mid-ADD (by its IPAM plugin, after the VF moved into the pod and
// its records were written): the meta-plugin's undo and the runtime's DEL leave nothing, and
// the VF is free for the next pod.
func TestFaultSriovPluginKilledMidAdd(t *testing.T) {
	v := faultNode(t, 1)
	killer := v.killerBin()
	v.nad("default", "sriov-k", `{"cniVersion": "1.0.0", "type": "sriov", "ipam": {"type": "killer"}}`,
		map[string]string{"k8s.v1.cni.cncf.io/resourceName": "intel.com/vf"})
	v.checkpoint(map[string][]string{"uid-k": v.vfs})
	p := v.vfPod("k", "macvlan-a,sriov-k")
	p.cni = libcni.NewCNIConfigWithCacheDir([]string{filepath.Dir(multinetBin), refPlugins, killer}, v.rtCache, nil)
	if _, err := p.add(); err == nil || !strings.Contains(err.Error(), "default/sriov-k") {
		t.Fatalf("ADD err = %v, want the sriov attachment's failure", err)
	}
	if err := p.del(); err != nil {
		t.Fatalf("the runtime's DEL: %v", err)
	}
	v.assertNothingLeft(p)
	v.checkpoint(map[string][]string{"uid-next": v.vfs})
	q := v.vfPod("next", "sriov-a")
	if _, err := q.add(); err != nil {
		t.Fatalf("next pod on the VF: %v", err)
	}
	if err := q.del(); err != nil {
		t.Fatal(err)
	}
	v.assertNothingLeft(q)
}
