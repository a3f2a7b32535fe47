package benchmarks

import (
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/multinet-io/multinet/pci/pcitest"
)

// A --pf run on a node whose VFs are all in use touches none of them: a VF kubelet gave a pod,
// a VF netdev the host has up, and a kernel-driver VF whose netdev is elsewhere (a pod's) are
// left alone, and the run says there is nothing to measure.
func TestSecurityPFBenchLeavesUsedVFsAlone(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces and veth links")
	}
	host, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { host.Close(); testutils.UnmountNS(host) }()
	tree := pcitest.New(t)
	const pf = "0000:00:02.0"
	tree.AddPF(pcitest.PF{Address: pf, Vendor: "8086", Device: "10c9", Driver: "igb", Netdev: "mnpf0", TotalVFs: 7})
	tree.AddVF(pcitest.VF{PF: pf, Index: 0, Address: "0000:00:12.0", Vendor: "8086", Device: "10ca", Driver: "igbvf", Netdev: "mnvf0"})
	tree.AddVF(pcitest.VF{PF: pf, Index: 1, Address: "0000:00:12.2", Vendor: "8086", Device: "10ca", Driver: "vfio-pci"})
	tree.AddVF(pcitest.VF{PF: pf, Index: 2, Address: "0000:00:12.4", Vendor: "8086", Device: "10ca", Driver: "igbvf"})
	checkpoint := filepath.Join(t.TempDir(), "kubelet_internal_checkpoint")
	if err := os.WriteFile(checkpoint, []byte(`{"Data":{"PodDeviceEntries":[{"PodUID":"pod-a","ContainerName":"app",
	  "ResourceName":"intel.com/dpdk","DeviceIDs":{"-1":["0000:00:12.2"]}}],"RegisteredDevices":{}},"Checksum":0}`), 0o600); err != nil {
		t.Fatal(err)
	}
	err = host.Do(func(ns.NetNS) error {
		for _, name := range []string{"mnpf0", "mnvf0"} {
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
				return err
			}
		}
		vf0, _ := netlink.LinkByName("mnvf0")
		if err := netlink.LinkSetUp(vf0); err != nil {
			return err
		}
		var logb strings.Builder
		_, err := RunPF(PFOptions{PF: "mnpf0", SysfsRoot: tree.Root, BinDir: t.TempDir(), Dir: t.TempDir(), Cycles: 2,
			Checkpoint: checkpoint, Log: slog.New(slog.NewTextHandler(&logb, nil))})
		if err == nil || !strings.Contains(err.Error(), "no free VF") {
			t.Errorf("RunPF = %v, want no free VF", err)
		}
		for _, want := range []string{"kubelet gave it to pod pod-a", "mnvf0 is up or enslaved on the host", "driver igbvf with 0 netdevs in this namespace"} {
			if !strings.Contains(logb.String(), want) {
				t.Errorf("log lacks %q:\n%s", want, logb.String())
			}
		}
		if l, err := netlink.LinkByName("mnvf0"); err != nil || l.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("the host's up VF netdev after the run: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
