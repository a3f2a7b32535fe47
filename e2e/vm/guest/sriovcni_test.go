//go:build e2e_vm

package guest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/pci"
)

// cniEnv is one simulated runtime: state and device-info dirs of its own.
type cniEnv struct {
	t                 *testing.T
	stateDir, infoDir string
}

func newCNIEnv(t *testing.T) *cniEnv {
	return &cniEnv{t: t, stateDir: t.TempDir(), infoDir: t.TempDir()}
}

// run execs /bin/sriov as a runtime does and returns its stdout.
func (e *cniEnv) run(command, cid, netns string, conf string) ([]byte, error) {
	cmd := exec.Command("/bin/sriov")
	cmd.Env = []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + cid, "CNI_NETNS=" + netns,
		"CNI_IFNAME=net1", "CNI_PATH=/bin", "MULTINET_STATE_DIR=" + e.stateDir, devinfo.EnvBase + "=" + e.infoDir}
	cmd.Stdin = strings.NewReader(conf)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if stderr.Len() > 0 {
		e.t.Logf("sriov %s stderr: %s", command, stderr.String())
	}
	if err != nil {
		return out, fmt.Errorf("sriov %s: %v: %s", command, err, out)
	}
	return out, nil
}

func newPodNS(t *testing.T) ns.NetNS {
	t.Helper()
	p, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(); testutils.UnmountNS(p) })
	return p
}

func vfNetdev(t *testing.T, vf string) netlink.Link {
	t.Helper()
	nds, err := pci.New("/sys").Netdevs(vf)
	if err != nil || len(nds) != 1 {
		t.Fatalf("vf %s netdevs in the host: %v, %v", vf, nds, err)
	}
	l, err := netlink.LinkByName(nds[0])
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func sameVF(a, b netlink.VfInfo) bool {
	return a.Mac.String() == b.Mac.String() && a.Vlan == b.Vlan && a.Qos == b.Qos && a.Spoofchk == b.Spoofchk && a.Trust == b.Trust
}

func showVF(v netlink.VfInfo) string {
	return fmt.Sprintf("mac %s vlan %d qos %d spoofchk %v trust %d", v.Mac, v.Vlan, v.Qos, v.Spoofchk, v.Trust)
}

// TestSRIOVCNINetdevMode: the plugin binary gives a real igbvf VF to a pod with VLAN, QoS,
// spoofchk, trust and MAC set through the real PF, and DEL puts all of it back.
func TestSRIOVCNINetdevMode(t *testing.T) {
	inGuest(t)
	_, vfs := withVFs(t, pf1, 2)
	pfnd, vf := pfNetdev(t, pf1), vfs[1]
	before, other := vfInfo(t, pfnd, 1), vfInfo(t, pfnd, 0)
	host := vfNetdev(t, vf)
	origName, origMAC := host.Attrs().Name, host.Attrs().HardwareAddr.String()
	pod := newPodNS(t)
	e := newCNIEnv(t)
	conf := `{"cniVersion":"1.1.0","name":"sriov-e2e","type":"sriov","deviceID":"` + vf + `",
		"vlan":100,"vlanQoS":3,"vlanProto":"802.1q","spoofchk":"off","trust":"on","mac":"02:00:00:aa:bb:01"}`
	out, err := e.run("ADD", "pod1", pod.Path(), conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ADD result: %s", out)
	var res struct {
		Interfaces []struct{ Name, Mac, Sandbox, PciID string } `json:"interfaces"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.Interfaces) != 1 {
		t.Fatalf("result %s: %v", out, err)
	}
	if i := res.Interfaces[0]; i.Name != "net1" || i.Mac != "02:00:00:aa:bb:01" || i.Sandbox != pod.Path() || i.PciID != vf {
		t.Errorf("result interface %+v", i)
	}
	got := vfInfo(t, pfnd, 1)
	if got.Mac.String() != "02:00:00:aa:bb:01" || got.Vlan != 100 || got.Qos != 3 || got.Spoofchk || got.Trust == 0 {
		t.Errorf("PF reports VF 1 as %s after ADD", showVF(got))
	}
	if now := vfInfo(t, pfnd, 0); !sameVF(now, other) {
		t.Errorf("VF 0 changed: %s, was %s", showVF(now), showVF(other))
	}
	err = pod.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("net1")
		if err != nil {
			return err
		}
		if l.Attrs().HardwareAddr.String() != "02:00:00:aa:bb:01" || l.Attrs().Flags&1 == 0 || l.Attrs().ParentDev != vf {
			return fmt.Errorf("net1 in the pod: mac %s flags %v parent %q", l.Attrs().HardwareAddr, l.Attrs().Flags, l.Attrs().ParentDev)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if nds, _ := pci.New("/sys").Netdevs(vf); len(nds) != 0 {
		t.Errorf("the host still sees the VF netdev %v", nds)
	}
	info, err := os.ReadFile(filepath.Join(e.infoDir, "cni", "sriov-e2e-pod1_net1"))
	if err != nil || !strings.Contains(string(info), `"pci-address":"`+vf+`"`) || !strings.Contains(string(info), `"pf-pci-address":"`+pf1+`"`) {
		t.Errorf("device-info %s: %v", info, err)
	}

	var m map[string]any
	_ = json.Unmarshal([]byte(conf), &m)
	m["prevResult"] = json.RawMessage(out)
	prev, _ := json.Marshal(m)
	if _, err := e.run("CHECK", "pod1", pod.Path(), string(prev)); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	// Someone drops the VLAN behind the plugin's back: CHECK says so.
	pfl, _ := netlink.LinkByName(pfnd)
	if err := netlink.LinkSetVfVlanQos(pfl, 1, 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := e.run("CHECK", "pod1", pod.Path(), string(prev)); err == nil || !strings.Contains(err.Error(), "vlan: want 100, have 0") {
		t.Errorf("CHECK after the VLAN was dropped: %v", err)
	}

	if _, err := e.run("DEL", "pod1", pod.Path(), conf); err != nil {
		t.Fatal(err)
	}
	assertVFHome(t, pfnd, 1, vf, before, origName, origMAC, "after DEL")
	if _, err := e.run("DEL", "pod1", pod.Path(), conf); err != nil {
		t.Errorf("second DEL: %v", err)
	}
}

// TestSRIOVCNIDelAfterNetnsGone: the pod's netns is destroyed before DEL; the kernel returns the
// real VF netdev to the host under its pod name, and DEL finds it by PCI address.
func TestSRIOVCNIDelAfterNetnsGone(t *testing.T) {
	inGuest(t)
	_, vfs := withVFs(t, pf1, 1)
	pfnd, vf := pfNetdev(t, pf1), vfs[0]
	before := vfInfo(t, pfnd, 0)
	host := vfNetdev(t, vf)
	origName, origMAC := host.Attrs().Name, host.Attrs().HardwareAddr.String()
	pod, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	path := pod.Path()
	e := newCNIEnv(t)
	conf := `{"cniVersion":"1.0.0","name":"sriov-e2e","type":"sriov","deviceID":"` + vf + `","vlan":42,"mac":"02:00:00:aa:bb:02"}`
	if _, err := e.run("ADD", "gone1", path, conf); err != nil {
		t.Fatal(err)
	}
	pod.Close()
	if err := testutils.UnmountNS(pod); err != nil {
		t.Fatal(err)
	}
	if _, err := e.run("DEL", "gone1", path, conf); err != nil {
		t.Fatal(err)
	}
	assertVFHome(t, pfnd, 0, vf, before, origName, origMAC, "after DEL")
}

// TestSRIOVCNIDPDKMode: a VF on vfio-pci gets its settings through the PF, no netdev work, and
// DEL restores them.
func TestSRIOVCNIDPDKMode(t *testing.T) {
	inGuest(t)
	m, vfs := withVFs(t, pf1, 2)
	pfnd, vf := pfNetdev(t, pf1), vfs[1]
	if err := m.Sys.Bind(vf, "vfio-pci"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Sys.BindDefault(vf) })
	before := vfInfo(t, pfnd, 1)
	pod := newPodNS(t)
	e := newCNIEnv(t)
	conf := `{"cniVersion":"1.1.0","name":"dpdk-e2e","type":"sriov","deviceID":"` + vf + `","vlan":300,"vlanQoS":5,"spoofchk":"off","mac":"02:00:00:aa:bb:03"}`
	out, err := e.run("ADD", "dpdk1", pod.Path(), conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("DPDK ADD result: %s", out)
	var res struct {
		Interfaces []struct{ Name, Mac, Sandbox, PciID string } `json:"interfaces"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.Interfaces) != 1 {
		t.Fatalf("result %s: %v", out, err)
	}
	if i := res.Interfaces[0]; i.Name != "net1" || i.Sandbox != "" || i.PciID != vf || i.Mac != "02:00:00:aa:bb:03" {
		t.Errorf("result interface %+v", i)
	}
	got := vfInfo(t, pfnd, 1)
	if got.Mac.String() != "02:00:00:aa:bb:03" || got.Vlan != 300 || got.Qos != 5 || got.Spoofchk {
		t.Errorf("PF reports %s after the DPDK ADD", showVF(got))
	}
	if drv, _ := m.Sys.Driver(vf); drv != "vfio-pci" {
		t.Errorf("VF driver %q after ADD", drv)
	}
	if _, err := os.Stat(filepath.Join(e.infoDir, "cni", "dpdk-e2e-dpdk1_net1")); err != nil {
		t.Errorf("device-info: %v", err)
	}
	if _, err := e.run("DEL", "dpdk1", pod.Path(), conf); err != nil {
		t.Fatal(err)
	}
	if after := vfInfo(t, pfnd, 1); !sameVF(after, before) {
		t.Errorf("after DEL the PF reports %s, before ADD %s", showVF(after), showVF(before))
	}
}

// TestSRIOVCNIConcurrentAddsOnOnePF: ADDs with VF settings for different VFs of one PF at once
// all succeed (upstream's "device or resource busy"), and one VF asked for twice goes to one pod.
func TestSRIOVCNIConcurrentAddsOnOnePF(t *testing.T) {
	inGuest(t)
	_, vfs := withVFs(t, pf1, 4)
	pfnd := pfNetdev(t, pf1)
	e := newCNIEnv(t)
	type job struct{ cid, vf, conf string }
	var jobs []job
	for i, vf := range vfs {
		jobs = append(jobs, job{fmt.Sprintf("c%d", i), vf, fmt.Sprintf(`{"cniVersion":"1.0.0","name":"conc","type":"sriov","deviceID":"%s","vlan":%d,"spoofchk":"off","trust":"on"}`, vf, 10+i)})
	}
	jobs = append(jobs, job{"dup", vfs[0], jobs[0].conf})
	pods := make([]ns.NetNS, len(jobs))
	for i := range pods {
		pods[i] = newPodNS(t)
	}
	errs := make([]error, len(jobs))
	start := time.Now()
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func(i int, j job) {
			defer wg.Done()
			_, errs[i] = e.run("ADD", j.cid, pods[i].Path(), j.conf)
		}(i, j)
	}
	wg.Wait()
	t.Logf("%d concurrent ADDs took %s", len(jobs), time.Since(start).Round(time.Millisecond))
	failed := 0
	for i, err := range errs {
		if err != nil {
			failed++
			if !strings.Contains(err.Error(), "in use by container") {
				t.Errorf("ADD %s: %v", jobs[i].cid, err)
			}
		}
	}
	if failed != 1 {
		t.Fatalf("%d ADDs failed, want exactly one (the duplicate of %s): %v", failed, vfs[0], errs)
	}
	for i := range vfs {
		if v := vfInfo(t, pfnd, i); v.Vlan != 10+i || v.Spoofchk || v.Trust == 0 {
			t.Errorf("VF %d: %s", i, showVF(v))
		}
	}
	for i, j := range jobs {
		wg.Add(1)
		go func(i int, j job) {
			defer wg.Done()
			if _, err := e.run("DEL", j.cid, pods[i].Path(), j.conf); err != nil {
				t.Errorf("DEL %s: %v", j.cid, err)
			}
		}(i, j)
	}
	wg.Wait()
	for i := range vfs {
		if v := vfInfo(t, pfnd, i); v.Vlan != 0 || !v.Spoofchk || v.Trust != 0 {
			t.Errorf("VF %d after DEL: %s", i, showVF(v))
		}
	}
}

// TestSRIOVCNIFailedAddUndoesOnTheRealPF: igb refuses a VF link state; by then the plugin has
// set VLAN, MAC, spoofchk and trust through the PF. The ADD fails naming the setting, and the
// VF is left exactly as it was, its netdev still in the host.
func TestSRIOVCNIFailedAddUndoesOnTheRealPF(t *testing.T) {
	inGuest(t)
	_, vfs := withVFs(t, pf1, 1)
	pfnd, vf := pfNetdev(t, pf1), vfs[0]
	before := vfInfo(t, pfnd, 0)
	host := vfNetdev(t, vf)
	pod := newPodNS(t)
	e := newCNIEnv(t)
	conf := `{"cniVersion":"1.1.0","name":"sriov-e2e","type":"sriov","deviceID":"` + vf + `",
		"vlan":77,"spoofchk":"off","trust":"on","mac":"02:00:00:aa:bb:04","link_state":"enable"}`
	_, err := e.run("ADD", "fail1", pod.Path(), conf)
	if err == nil || !strings.Contains(err.Error(), "link state enable") || !strings.Contains(err.Error(), vf) {
		t.Fatalf("ADD with a link state igb refuses: %v", err)
	}
	t.Logf("refused as expected: %v", err)
	assertVFHome(t, pfnd, 0, vf, before, host.Attrs().Name, host.Attrs().HardwareAddr.String(), "after the failed ADD")
	if st, _ := os.ReadDir(filepath.Join(e.stateDir, "sriov", "vf")); len(st) != 0 {
		t.Errorf("ownership records left: %d", len(st))
	}
}

// TestSRIOVCNIOrphanTakeover: pod A's netns vanishes without a DEL (the real VF returns to the
// host under A's interface name, with A's settings); pod B gets the VF starting from the
// settings it had before A; A's late DEL leaves B's VF alone; B's DEL restores the pre-A state.
func TestSRIOVCNIOrphanTakeover(t *testing.T) {
	inGuest(t)
	_, vfs := withVFs(t, pf1, 1)
	pfnd, vf := pfNetdev(t, pf1), vfs[0]
	before := vfInfo(t, pfnd, 0)
	host := vfNetdev(t, vf)
	origName, origMAC := host.Attrs().Name, host.Attrs().HardwareAddr.String()
	e := newCNIEnv(t)
	podA, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	pathA := podA.Path()
	confA := `{"cniVersion":"1.1.0","name":"sriov-e2e","type":"sriov","deviceID":"` + vf + `","vlan":500,"trust":"on","mac":"02:00:00:aa:aa:aa"}`
	if _, err := e.run("ADD", "ctr-a", pathA, confA); err != nil {
		t.Fatal(err)
	}
	podA.Close()
	if err := testutils.UnmountNS(podA); err != nil {
		t.Fatal(err)
	}
	podB := newPodNS(t)
	confB := `{"cniVersion":"1.1.0","name":"sriov-e2e","type":"sriov","deviceID":"` + vf + `","mac":"02:00:00:bb:bb:bb"}`
	// Right away: the kernel hands the netdev back from A's netns asynchronously, and ADD
	// waits for it.
	if _, err := e.run("ADD", "ctr-b", podB.Path(), confB); err != nil {
		t.Fatalf("B's ADD right after A's netns vanished: %v", err)
	}
	got := vfInfo(t, pfnd, 0)
	if got.Vlan != before.Vlan || (got.Trust != 0) != (before.Trust != 0) || got.Mac.String() != "02:00:00:bb:bb:bb" {
		t.Errorf("B got the VF with A's leftovers: %s (before A: %s)", showVF(got), showVF(before))
	}
	if _, err := e.run("DEL", "ctr-a", pathA, confA); err != nil {
		t.Fatalf("A's late DEL: %v", err)
	}
	if now := vfInfo(t, pfnd, 0); !sameVF(now, got) {
		t.Errorf("A's late DEL changed B's VF: %s, was %s", showVF(now), showVF(got))
	}
	err = podB.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("net1")
		if err != nil {
			return err
		}
		if l.Attrs().HardwareAddr.String() != "02:00:00:bb:bb:bb" || l.Attrs().Flags&1 == 0 {
			return fmt.Errorf("B's net1: mac %s flags %v", l.Attrs().HardwareAddr, l.Attrs().Flags)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("after A's late DEL: %v", err)
	}
	if _, err := e.run("DEL", "ctr-b", podB.Path(), confB); err != nil {
		t.Fatal(err)
	}
	assertVFHome(t, pfnd, 0, vf, before, origName, origMAC, "after B's DEL")
}

// assertVFHome checks what an operator would after a pod let go of a VF: the PF reports the VF's
// admin settings as before, and its netdev is back in the host under its old name and MAC.
func assertVFHome(t *testing.T, pfnd string, index int, vf string, before netlink.VfInfo, name, mac, when string) {
	t.Helper()
	if after := vfInfo(t, pfnd, index); !sameVF(after, before) {
		t.Errorf("%s the PF reports VF %d as %s, before %s", when, index, showVF(after), showVF(before))
	}
	back := vfNetdev(t, vf)
	if back.Attrs().Name != name || back.Attrs().HardwareAddr.String() != mac {
		t.Errorf("%s the VF netdev is %s %s, was %s %s", when, back.Attrs().Name, back.Attrs().HardwareAddr, name, mac)
	}
}
