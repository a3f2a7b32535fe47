package benchmarks

import (
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/multinet-io/multinet/pci/pcitest"
)

// Node is the simulated SR-IOV node. The benchmark process itself runs in a private network
// and mount namespace (see Isolate), so "the host" here is that namespace: links, the bridge,
// /var/lib/kubelet, /var/lib/cni and /run are the benchmark's own and vanish with it.
type Node struct {
	Dir       string
	Tree      *pcitest.Tree
	ConfDir   string // the node's CNI conf dir: the cluster network's conflist
	IPAMDir   string
	VFNetdevs map[string]string // VF address -> its host netdev name

	mu         sync.Mutex
	free       []string            // VF addresses no pod holds, in order
	alloc      map[string][]string // pod UID -> VF addresses
	checkpoint string
}

// The resource the NADs name and the checkpoint allocates, as an SR-IOV device plugin pool.
const vfResource = "intel.com/bench_vf"

// kubelet's device manager checkpoint; inside the private mount namespace this path is ours.
const kubeletCheckpoint = "/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint"

// treeTB lets pcitest build a tree outside `go test`.
type treeTB struct{ dir string }

func (*treeTB) Helper()                           {}
func (*treeTB) Fatalf(format string, args ...any) { log.Fatalf(format, args...) }
func (*treeTB) Cleanup(func())                    {}
func (t *treeTB) TempDir() string {
	d, err := os.MkdirTemp(t.dir, "sysfs-")
	if err != nil {
		log.Fatal(err)
	}
	return d
}

// NewNode builds a node with eth0 (the macvlan master), one PF and nVFs veth-backed VFs named
// in a fake sysfs tree, and the cluster network conflist (bridge + host-local + portmap).
func NewNode(dir string, nVFs int) (*Node, error) {
	n := &Node{Dir: dir, ConfDir: filepath.Join(dir, "net.d"), IPAMDir: filepath.Join(dir, "ipam"),
		VFNetdevs: map[string]string{}, alloc: map[string][]string{}, checkpoint: kubeletCheckpoint}
	for _, d := range []string{n.ConfDir, n.IPAMDir, filepath.Dir(n.checkpoint)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	lo, err := netlinksafe.LinkByName("lo")
	if err != nil {
		return nil, err
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return nil, err
	}
	// Veths, not dummies: some kernels are built without the dummy driver.
	for _, name := range []string{"eth0", "benchpf0"} {
		if err := addVeth(name); err != nil {
			return nil, err
		}
	}
	n.Tree = pcitest.New(&treeTB{dir: dir})
	const pf = "0000:3b:00.0"
	n.Tree.AddPF(pcitest.PF{Address: pf, Vendor: "8086", Device: "1593", Driver: "ice", Netdev: "benchpf0", TotalVFs: nVFs})
	for i := 0; i < nVFs; i++ {
		name := fmt.Sprintf("benchvf%d", i)
		if err := addVeth(name); err != nil {
			return nil, err
		}
		addr := fmt.Sprintf("0000:3b:%02x.%d", 2+i/8, i%8)
		n.Tree.AddVF(pcitest.VF{PF: pf, Index: i, Address: addr, Vendor: "8086", Device: "1889", Driver: "iavf", Netdev: name})
		n.VFNetdevs[addr] = name
		n.free = append(n.free, addr)
	}
	conflist := fmt.Sprintf(`{
  "cniVersion": "1.0.0", "name": "cbr0",
  "plugins": [
    {"type": "bridge", "bridge": "benchbr0", "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": "10.244.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]}`, n.IPAMDir)
	if err := os.WriteFile(n.ClusterConflist(), []byte(conflist), 0o644); err != nil {
		return nil, err
	}
	return n, n.writeCheckpoint()
}

func (n *Node) ClusterConflist() string { return filepath.Join(n.ConfDir, "10-bridge.conflist") }

func addVeth(name string) error {
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
		return fmt.Errorf("veth %s: %w", name, err)
	}
	l, err := netlinksafe.LinkByName(name)
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(l)
}

// Allocate gives a pod k VFs as kubelet's device manager would and records them in the
// checkpoint file both stacks read (no PodResources socket exists on this node).
func (n *Node) Allocate(podUID string, k int) ([]string, error) {
	if k == 0 {
		return nil, nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.free) < k {
		return nil, fmt.Errorf("pod %s: %d VFs wanted, %d free", podUID, k, len(n.free))
	}
	ids := append([]string(nil), n.free[:k]...)
	n.free = n.free[k:]
	n.alloc[podUID] = ids
	return ids, n.writeCheckpoint()
}

// Release returns a pod's VFs to the pool.
func (n *Node) Release(podUID string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	ids, ok := n.alloc[podUID]
	if !ok {
		return nil
	}
	delete(n.alloc, podUID)
	n.free = append(n.free, ids...)
	sort.Strings(n.free)
	return n.writeCheckpoint()
}

// writeCheckpoint writes kubelet's device manager checkpoint (v2 format: DeviceIDs keyed by
// NUMA node) for the current allocations. Called with n.mu held.
func (n *Node) writeCheckpoint() error {
	type entry struct {
		PodUID        string
		ContainerName string
		ResourceName  string
		DeviceIDs     map[string][]string
		AllocResp     []byte
	}
	var cp struct {
		Data struct {
			PodDeviceEntries  []entry
			RegisteredDevices map[string][]string
		}
		Checksum uint64
	}
	uids := make([]string, 0, len(n.alloc))
	for uid := range n.alloc {
		uids = append(uids, uid)
	}
	sort.Strings(uids)
	for _, uid := range uids {
		cp.Data.PodDeviceEntries = append(cp.Data.PodDeviceEntries, entry{PodUID: uid, ContainerName: "app",
			ResourceName: vfResource, DeviceIDs: map[string][]string{"-1": n.alloc[uid]}})
	}
	all := make([]string, 0, len(n.VFNetdevs))
	for a := range n.VFNetdevs {
		all = append(all, a)
	}
	sort.Strings(all)
	cp.Data.RegisteredDevices = map[string][]string{vfResource: all}
	b, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	tmp := n.checkpoint + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, n.checkpoint)
}

// HostVFsHome reports VFs whose netdev is not back in the host namespace (a leaked attachment).
func (n *Node) HostVFsHome() error {
	var missing []string
	for addr, name := range n.VFNetdevs {
		if _, err := netlinksafe.LinkByName(name); err != nil {
			missing = append(missing, addr+" ("+name+")")
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("VF netdevs not back on the host after DEL: %v", missing)
	}
	return nil
}
