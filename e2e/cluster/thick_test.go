//go:build e2e_cluster

package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/multinet-io/multinet/e2e/cluster/clustertest"
	"github.com/multinet-io/multinet/podresources"
)

func thickCluster(t *testing.T) *clustertest.Cluster {
	c := clustertest.Connect(t)
	if !c.Thick() {
		t.Skip("the node's CNI is in thin mode (MULTINET_MODE=thick make e2e-cluster-thick runs this)")
	}
	return c
}

// assertFullyAttached checks what a user checks: the pod Running, network-status with eth0 and
// net1, and net1 in the pod's netns with the address network-status names.
func assertFullyAttached(t *testing.T, c *clustertest.Cluster, name string) {
	t.Helper()
	pod := c.WaitRunning(t, "default", name, 120*time.Second)
	st := networkStatus(t, c, "default", name)
	if len(st) != 2 || st[1].Interface != "net1" || len(st[1].IPs) != 1 {
		t.Errorf("pod %s: network-status %+v, want eth0 and net1", name, st)
		return
	}
	netns := clustertest.PodNetNS(t, "eth0", pod.Status.PodIP)
	netns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("net1")
		if err != nil {
			t.Errorf("pod %s has no net1: %v", name, err)
			return nil
		}
		addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
		if len(addrs) != 1 || addrs[0].IP.String() != st[1].IPs[0] {
			t.Errorf("pod %s net1 %v, network-status says %v", name, addrs, st[1].IPs)
		}
		return nil
	})
}

// The agent killed while pods are being created, started again a few seconds later: the shim
// waits for it, the kubelet retries what failed, and every pod ends Running with all its
// interfaces and nothing leaked from the calls the crash cut.
func TestThickAgentKilledWhilePodsCreated(t *testing.T) {
	c := thickCluster(t)
	master := macvlanMaster(t)
	c.CreateNAD(t, "default", "macvlan-conf", macvlanConf(c, master, "192.168.1.0/24"), nil)
	const n = 6
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("herd-%d", i)
		c.CreatePod(t, "default", name, withNetworks("macvlan-conf"))
		if i == n/2 {
			restart := c.KillAgent(t)
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(3 * time.Second)
				restart()
			}()
		}
	}
	wg.Wait()
	var ids []string
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("herd-%d", i)
		assertFullyAttached(t, c, name)
		ids = append(ids, c.Sandboxes(t, "default", name)...)
	}
	// Each live sandbox holds exactly its two leases; nobody else holds one.
	live := map[string]bool{}
	for _, id := range ids {
		live[id] = true
	}
	for lease, owner := range leaseOwners(c) {
		if strings.HasPrefix(lease, "macvlan-conf/") && !live[owner] {
			t.Errorf("lease %s held by %s, no live sandbox (a cut ADD leaked it)", lease, owner)
		}
	}
	for i := 0; i < n; i++ {
		c.DeletePod(t, "default", fmt.Sprintf("herd-%d", i))
	}
	for lease, owner := range leaseOwners(c) {
		if live[owner] {
			t.Errorf("lease %s still held after delete by %s", lease, owner)
		}
	}
}

// The agent down while pods are deleted: every DEL succeeds through the shim's own fallback,
// and no lease and no delegate cache is left.
func TestThickAgentDownWhilePodsDeleted(t *testing.T) {
	c := thickCluster(t)
	master := macvlanMaster(t)
	c.CreateNAD(t, "default", "macvlan-conf", macvlanConf(c, master, "192.168.1.0/24"), nil)
	var ids []string
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("going-%d", i)
		c.CreatePod(t, "default", name, withNetworks("macvlan-conf"))
	}
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("going-%d", i)
		assertFullyAttached(t, c, name)
		ids = append(ids, c.Sandboxes(t, "default", name)...)
	}
	restart := c.KillAgent(t)
	for i := 0; i < 3; i++ {
		c.DeletePod(t, "default", fmt.Sprintf("going-%d", i))
	}
	owned := map[string]bool{}
	for _, id := range ids {
		owned[id] = true
	}
	for lease, owner := range leaseOwners(c) {
		if owned[owner] {
			t.Errorf("lease %s still held by deleted sandbox %s", lease, owner)
		}
	}
	if left := cacheMentions(c, ids); len(left) > 0 {
		t.Errorf("delegate cache still lists %v", left)
	}
	restart()
}

// The agent's metrics and health answer on the node, counting the calls it served.
func TestThickAgentMetrics(t *testing.T) {
	c := thickCluster(t)
	c.CreatePod(t, "default", "counted")
	c.WaitRunning(t, "default", "counted", 90*time.Second)
	c.DeletePod(t, "default", "counted")
	addr := c.AgentMetrics()
	get := func(path string) (int, string) {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("multinetd metrics %s: %v", addr, err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, addr)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := readAll(conn)
		code := 0
		fmt.Sscanf(string(b), "HTTP/1.0 %d", &code)
		if code == 0 {
			fmt.Sscanf(string(b), "HTTP/1.1 %d", &code)
		}
		return code, string(b)
	}
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz = %d", code)
	}
	_, m := get("/metrics")
	for _, want := range []string{`multinet_cni_requests_total{command="ADD",result="ok"}`, `multinet_cni_requests_total{command="DEL",result="ok"}`,
		`multinet_cni_delegate_duration_seconds_bucket{command="ADD",inprocess="false",plugin="bridge"`} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if _, err := os.Stat(filepath.Join(c.Dir, "run", "multinet", "multinet.sock")); err != nil {
		t.Errorf("agent socket: %v", err)
	}
}

func readAll(conn net.Conn) ([]byte, error) {
	var out []byte
	buf := make([]byte, 32<<10)
	for {
		n, err := conn.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			return out, nil
		}
	}
}

// startAgentWith stops the cluster's multinetd and runs it again with extra flags (its usual
// environment and flags from run/multinetd.sh), until the test ends; then the usual one again.
func startAgentWith(t *testing.T, c *clustertest.Cluster, extra ...string) *plugin {
	t.Helper()
	c.KillAgent(t) // its restart runs last, after this agent's stop
	p := startProcess(t, t.TempDir(), nil, filepath.Join(c.Dir, "run", "multinetd.sh"), extra...)
	sock := filepath.Join(c.Dir, "run", "multinet", "multinet.sock")
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if conn, err := net.Dial("unix", sock); err == nil {
			conn.Close()
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("multinetd with %v not serving:\n%s", extra, p.logText())
		}
	}
}

// kubelet's device plugin registration served by the agent: multinetd with
// --device-plugin-config registers the pool with kubelet, a pod asking for a VF is allocated
// one and gets net1 on it (the agent's in-process sriov), and a pool the node cannot serve is a
// Warning Event on the Node from multinetd, as the standalone device plugin posts it.
func TestThickDevicePluginInAgent(t *testing.T) {
	c := thickCluster(t)
	tree, macs := simSRIOVNode(t, c, 2)
	cfg := filepath.Join(t.TempDir(), "dp-config.json")
	writeConfig(t, cfg, `{"resourceList":[{"resourceName":"mn_sriov_net","selectors":{"pfNames":["mne2epf"]}},
	  {"resourceName":"mn_e2e_gtp","selectors":{"vendors":["8086"],"ddpProfiles":["GTPv1-C/U IPv4/IPv6 payload"]}}]}`)
	since := time.Now().Add(-time.Second)
	p := startAgentWith(t, c, "--device-plugin-config", cfg, "--device-plugin-dir", c.DevicePluginDir(), "--sysfs-root", tree.Root)
	waitNodeRes(t, c, p, "registered by multinetd", sriovRes, 2, 2)
	if !strings.Contains(p.logText(), "registered with kubelet") {
		t.Errorf("multinetd's log does not show the registration")
	}

	c.CreateNAD(t, "default", "sriov-net", `{"cniVersion": "1.0.0", "type": "sriov", "ipam": {"type": "host-local",
	  "dataDir": "`+c.IPAMDir()+`", "subnet": "10.56.218.0/24"}}`, map[string]string{"k8s.v1.cni.cncf.io/resourceName": sriovRes})
	c.CreatePod(t, "default", "cnf-agent", sriovPod("cnf-agent"))
	pod := c.WaitRunning(t, "default", "cnf-agent", 90*time.Second)
	ids, err := podresources.DeviceIDs(context.Background(), podresources.Config{Socket: c.PodResourcesSocket()}, "default", "cnf-agent", string(pod.UID), sriovRes)
	if err != nil || len(ids) != 1 {
		t.Fatalf("kubelet allocated %v, %v", ids, err)
	}
	st := networkStatus(t, c, "default", "cnf-agent")
	if len(st) != 2 || st[1].Interface != "net1" || st[1].DeviceInfo == nil || st[1].DeviceInfo.Pci == nil ||
		st[1].DeviceInfo.Pci.PciAddress != ids[0] || st[1].DeviceInfo.Pci.PfPciAddress != e2ePF {
		t.Fatalf("network-status %+v; kubelet allocated %s", st, ids[0])
	}
	vfNetdev := "mne2ev" + ids[0][len(ids[0])-1:]
	clustertest.PodNetNS(t, "eth0", pod.Status.PodIP).Do(func(ns.NetNS) error {
		if l, err := netlink.LinkByName("net1"); err != nil || l.Attrs().HardwareAddr.String() != macs[vfNetdev] {
			t.Errorf("net1 is not the allocated VF %s (%s): %v", ids[0], vfNetdev, err)
		}
		return nil
	})

	waitPoolRefused(t, c, p, since, "multinetd", "intel.com/mn_e2e_gtp", "ddpProfiles")

	c.DeletePod(t, "default", "cnf-agent")
	if l, err := netlink.LinkByName(vfNetdev); err != nil || l.Attrs().HardwareAddr.String() != macs[vfNetdev] {
		t.Errorf("VF %s not back on the node as %s after the pod was deleted: %v", ids[0], vfNetdev, err)
	}
}
