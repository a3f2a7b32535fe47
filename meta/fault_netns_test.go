package meta_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

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
