package meta_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/multinet-io/multinet/pci/pcitest"
)

// sriovNode adds a simulated SR-IOV PF with VFs backed by veth links to the node, and exposes
// its sysfs tree and state dir to the plugins through their environment variables.
func (n *node) sriovNode(vfs int) (*pcitest.Tree, map[string]string) {
	n.t.Helper()
	tree := pcitest.New(n.t)
	tree.AddPF(pcitest.PF{Address: "0000:00:02.0", Vendor: "8086", Device: "10c9", Driver: "igb", Netdev: "mnpf0", TotalVFs: 7})
	macs := map[string]string{}
	err := n.host.Do(func(ns.NetNS) error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "mnpf0"}, PeerName: "mnpf0p"}); err != nil {
			return err
		}
		for i := 0; i < vfs; i++ {
			name := fmt.Sprintf("mnvf%d", i)
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
				return err
			}
			l, _ := netlink.LinkByName(name)
			macs[name] = l.Attrs().HardwareAddr.String()
		}
		return nil
	})
	if err != nil {
		n.t.Fatal(err)
	}
	for i := 0; i < vfs; i++ {
		tree.AddVF(pcitest.VF{PF: "0000:00:02.0", Index: i, Address: fmt.Sprintf("0000:00:12.%d", i), Vendor: "8086", Device: "10ca",
			Driver: "igbvf", Netdev: fmt.Sprintf("mnvf%d", i)})
	}
	n.t.Setenv("MULTINET_SYSFS_ROOT", tree.Root)
	n.t.Setenv("MULTINET_STATE_DIR", filepath.Join(n.dir, "state"))
	return tree, macs
}

// A NAD with type sriov and a deviceID in the JSON selection: the pod gets net1 on that VF and
// network-status carries its device-info; DEL gives the VF back to the node under its name.
func TestSriovThroughMeta(t *testing.T) {
	n := newNode(t)
	_, macs := n.sriovNode(2)
	n.nad("default", "sriov-net", `{"cniVersion": "1.0.0", "type": "sriov",
	  "ipam": {"type": "host-local", "dataDir": "`+n.ipamDir+`", "subnet": "10.56.217.0/24"}}`, nil)
	p := n.pod("cnf", `[{"name": "sriov-net", "deviceID": "0000:00:12.1"}]`)
	if _, err := p.add(); err != nil {
		t.Fatal(err)
	}
	links := p.links()
	if len(links["net1"]) != 1 || !strings.HasPrefix(links["net1"][0], "10.56.217.") {
		t.Fatalf("pod interfaces = %v, want net1 with an address from 10.56.217.0/24", links)
	}
	p.ns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("net1")
		if err == nil && l.Attrs().HardwareAddr.String() != macs["mnvf1"] {
			t.Errorf("net1 is %s, not the VF 0000:00:12.1 (mnvf1, %s)", l.Attrs().HardwareAddr, macs["mnvf1"])
		}
		return nil
	})
	st := p.status()
	if len(st) != 2 || st[1].DeviceInfo == nil || st[1].DeviceInfo.Type != "pci" || st[1].DeviceInfo.Pci == nil ||
		st[1].DeviceInfo.Pci.PciAddress != "0000:00:12.1" || st[1].DeviceInfo.Pci.PfPciAddress != "0000:00:02.0" {
		t.Fatalf("network-status = %+v; want net1 with device-info pci 0000:00:12.1 on PF 0000:00:02.0", st)
	}
	if err := p.del(); err != nil {
		t.Fatal(err)
	}
	n.host.Do(func(ns.NetNS) error {
		if l, err := netlink.LinkByName("mnvf1"); err != nil || l.Attrs().HardwareAddr.String() != macs["mnvf1"] {
			t.Errorf("VF not back on the node as mnvf1 after DEL: %v", err)
		}
		return nil
	})
	if l := n.leases(); len(l) != 0 {
		t.Errorf("leases after DEL = %v", l)
	}
}

// A NAD with resourceName: multinet takes the pod's devices from kubelet (here its checkpoint
// file, as when the PodResources socket does not answer), one per attachment in sorted order.
func TestSriovResourceFromKubeletCheckpoint(t *testing.T) {
	n := newNode(t)
	_, macs := n.sriovNode(3)
	checkpoint := filepath.Join(n.dir, "kubelet_internal_checkpoint")
	n.write(n.dir, "kubelet_internal_checkpoint", `{"Data":{"PodDeviceEntries":[
	  {"PodUID":"uid-cnf","ContainerName":"app","ResourceName":"intel.com/sriov_netdevice","DeviceIDs":{"-1":["0000:00:12.2","0000:00:12.0"]}},
	  {"PodUID":"uid-other","ContainerName":"app","ResourceName":"intel.com/sriov_netdevice","DeviceIDs":{"-1":["0000:00:12.1"]}}]},"Checksum":1}`)
	n.conf = n.multinetConf(map[string]interface{}{"networkDir": n.netDir, "kubeletCheckpoint": checkpoint,
		"podResourcesSocket": filepath.Join(n.dir, "no-kubelet.sock")})
	n.nad("default", "sriov-res", `{"cniVersion": "1.0.0", "type": "sriov"}`,
		map[string]string{"k8s.v1.cni.cncf.io/resourceName": "intel.com/sriov_netdevice"})

	p := n.pod("cnf", "sriov-res,sriov-res", [2]string{"K8S_POD_UID", "uid-cnf"})
	if _, err := p.add(); err != nil {
		t.Fatal(err)
	}
	p.ns.Do(func(ns.NetNS) error {
		for ifname, vf := range map[string]string{"net1": "mnvf0", "net2": "mnvf2"} {
			l, err := netlink.LinkByName(ifname)
			if err != nil || l.Attrs().HardwareAddr.String() != macs[vf] {
				t.Errorf("%s should be %s (the pod's devices in sorted order): %v", ifname, vf, err)
			}
		}
		return nil
	})
	st := p.status()
	if st[1].DeviceInfo.Pci.PciAddress != "0000:00:12.0" || st[2].DeviceInfo.Pci.PciAddress != "0000:00:12.2" {
		t.Errorf("device-info = %+v, %+v", st[1].DeviceInfo.Pci, st[2].DeviceInfo.Pci)
	}
	if err := p.del(); err != nil {
		t.Fatal(err)
	}

	// A pod picking a device itself for a resource network is refused; so is a pod kubelet
	// gave nothing.
	q := n.pod("thief", `[{"name": "sriov-res", "deviceID": "0000:00:12.1"}]`, [2]string{"K8S_POD_UID", "uid-cnf"})
	if _, err := q.add(); err == nil || !strings.Contains(err.Error(), "deviceID 0000:00:12.1 refused") {
		t.Errorf("pod-chosen device: %v", err)
	}
	r := n.pod("nodev", "sriov-res", [2]string{"K8S_POD_UID", "uid-none"})
	if _, err := r.add(); err == nil || !strings.Contains(err.Error(), "resource intel.com/sriov_netdevice") || !strings.Contains(err.Error(), "default/nodev") {
		t.Errorf("pod without devices: %v", err)
	}
	if l := n.leases(); len(l) != 0 {
		t.Errorf("leases after refused ADDs = %v", l)
	}
}
