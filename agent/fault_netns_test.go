package agent_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
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

// The fault table of issue 17 in thick mode: the agent, the shim or the thin plugin killed at
// random points of a pod's ADD; after the runtime's DEL nothing may be left.

// vfNode is the node with a PF and k veth-backed VFs (vfN in the host) on a fake sysfs tree,
// the sriov NAD sriov-net, and the sriov binary on the runtime's path with the agent's state
// dir (the shim's DEL without the agent execs it).
type vfNode struct {
	*node
	tree  *pcitest.Tree
	vfs   []string          // VF addresses, in order
	macs  map[string]string // host netdev -> original MAC
	state string            // MULTINET_STATE_DIR; the sriov state is under sriov/
}

func newVFNode(t *testing.T, k int) *vfNode {
	t.Helper()
	n := newNode(t)
	v := &vfNode{node: n, macs: map[string]string{}, state: filepath.Join(n.dir, "state")}
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
	}
	n.sysRoot = v.tree.Root
	// What the sriov binary reads (the agent gets the same as flags, in startVFAgent).
	t.Setenv("MULTINET_SYSFS_ROOT", v.tree.Root)
	t.Setenv("MULTINET_STATE_DIR", v.state)
	t.Setenv("MULTINET_POOLS_FILE", filepath.Join(n.dir, "no-device-plugin", "pools.json"))
	t.Setenv("MULTINET_KUBELET_CHECKPOINT", filepath.Join(n.dir, "no-kubelet", "checkpoint"))
	n.nad("default", "sriov-net", `{"cniVersion": "1.0.0", "type": "sriov",
	  "ipam": {"type": "host-local", "dataDir": "`+n.ipamDir+`", "subnet": "10.56.0.0/16"}}`, nil)
	return v
}

func (v *vfNode) startVFAgent() {
	v.t.Helper()
	v.startAgent("--sriov-state-dir", filepath.Join(v.state, "sriov"), "--kubelet-checkpoint", filepath.Join(v.dir, "no-kubelet", "checkpoint"))
}

// vfPod is a pod on eth0 (the cluster network), net1 on VF i (in-process sriov) and net2 on
// the macvlan network, the runtime running conf with the sriov binary on its path too.
func (v *vfNode) vfPod(name string, i int, conf []byte) *pod {
	p := v.pod(name, fmt.Sprintf(`[{"name": "sriov-net", "deviceID": %q}, {"name": "macvlan-conf"}]`, v.vfs[i]), conf)
	p.cni = libcni.NewCNIConfigWithCacheDir([]string{binDir, refPlugins, sriovDir}, v.rtCache, nil)
	return p
}

// hostLinks is every host link's name, MAC, MTU and up state: a leaked netdev, a VF not back
// under its name or with a pod's MAC or MTU shows as a change.
func (v *vfNode) hostLinks() []string {
	var out []string
	_ = v.host.Do(func(ns.NetNS) error {
		ls, _ := netlink.LinkList()
		for _, l := range ls {
			a := l.Attrs()
			out = append(out, fmt.Sprintf("%s %s mtu %d up %v", a.Name, a.HardwareAddr, a.MTU, a.Flags&1 != 0))
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// stateFiles is every file the leases, the meta-plugin's caches, the sriov plugin's records and
// the runtime's cache leave (locks and host-local's last-reserved markers stay by design).
func (v *vfNode) stateFiles() []string {
	var out []string
	for _, d := range []string{v.ipamDir, v.cacheDir, v.state, v.rtCache} {
		filepath.Walk(d, func(p string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() && !strings.HasSuffix(p, ".lock") && filepath.Base(p) != "lock" &&
				!strings.HasPrefix(filepath.Base(p), "last_reserved_ip") {
				out = append(out, strings.TrimPrefix(p, v.dir+"/"))
			}
			return nil
		})
	}
	sort.Strings(out)
	return out
}

func (v *vfNode) doctor() *doctor.Report {
	v.t.Helper()
	var r *doctor.Report
	err := v.host.Do(func(ns.NetNS) error {
		var err error
		r, err = doctor.Check(&doctor.Config{Sys: pci.New(v.tree.Root), SriovStateDir: filepath.Join(v.state, "sriov"),
			MetaCacheDir: v.cacheDir, IPAMDirs: []string{v.ipamDir}})
		return err
	})
	if err != nil {
		v.t.Fatal(err)
	}
	return r
}

// podLeftovers lists the interfaces left in the pod after its DEL, but for a macvlan still
// under the temporary name the macvlan plugin gives it in the pod before its rename (vethXXXX):
// a kill between the two leaves it, its DEL looks for the final name only, and it dies with the
// pod's netns (no host side). cut counts those.
func (p *pod) podLeftovers(cut *int) []string {
	var out []string
	_ = p.ns.Do(func(ns.NetNS) error {
		ls, _ := netlink.LinkList()
		for _, l := range ls {
			name := l.Attrs().Name
			if name == "lo" {
				continue
			}
			if l.Type() == "macvlan" && strings.HasPrefix(name, "veth") {
				*cut++
				continue
			}
			out = append(out, name+" ("+l.Type()+")")
		}
		return nil
	})
	return out
}

// leftovers says what differs from the node before the pod (baseLinks), once the runtime has
// removed the pod's netns after its DEL: the pod's interfaces before that, host links, state
// files, doctor's findings. "" when nothing is left.
func (v *vfNode) leftovers(baseLinks []string, p *pod, cut *int) string {
	var out []string
	if p != nil {
		if l := p.podLeftovers(cut); len(l) > 0 {
			out = append(out, fmt.Sprintf("pod interfaces %v", l))
		}
		p.ns.Close()
		testutils.UnmountNS(p.ns)
	}
	now := v.hostLinks()
	if added, gone := diff(now, baseLinks), diff(baseLinks, now); len(added)+len(gone) > 0 {
		out = append(out, fmt.Sprintf("host links: new or changed %v, gone %v", added, gone))
	}
	if f := v.stateFiles(); len(f) > 0 {
		out = append(out, fmt.Sprintf("state files %v", f))
	}
	for _, f := range v.doctor().Findings {
		out = append(out, fmt.Sprintf("doctor: %s %s: %s", f.Kind, f.Subject, f.Detail))
	}
	return strings.Join(out, "; ")
}

func diff(a, b []string) []string {
	in := map[string]bool{}
	for _, s := range b {
		in[s] = true
	}
	var out []string
	for _, s := range a {
		if !in[s] {
			out = append(out, s)
		}
	}
	return out
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, s, err)
	}
	return n
}

// killAgent SIGKILLs the agent's process group (as the kernel kills a container: the agent
// and the delegates it runs) and waits until every process of it is gone.
func (n *node) killAgent() {
	n.t.Helper()
	pid := n.agent.Process.Pid
	syscall.Kill(-pid, syscall.SIGKILL)
	n.agent.Wait()
	n.agent = nil
	waitGroupGone(n.t, pid)
}

func waitGroupGone(t *testing.T, pgid int) {
	t.Helper()
	for start := time.Now(); unix.Kill(-pgid, 0) == nil; time.Sleep(5 * time.Millisecond) {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("process group %d still running 30 s after the kill", pgid)
		}
	}
}

// agentSteps are the points of a pod's ADD in the agent, as its log shows them.
var agentSteps = []string{"before the plan", "cluster network", "sriov (in-process)", "macvlan", "after the attachments", "answered"}

// stepAt says how far the agent's ADD of container cid got, from its log and the delegate cache.
func (v *vfNode) stepAt(log, cid string) int {
	attached, answered := 0, false
	for _, line := range strings.Split(log, "\n") {
		var e struct{ Msg, Container, Command string }
		if json.Unmarshal([]byte(line), &e) != nil || e.Container != cid {
			continue
		}
		switch {
		case e.Msg == "attached":
			attached++
		case e.Command == "ADD" && (e.Msg == "CNI request done" || e.Msg == "CNI request failed"):
			answered = true
		}
	}
	if answered {
		return 5
	}
	if attached > 0 {
		return 1 + attached
	}
	if _, err := os.Stat(filepath.Join(v.cacheDir, "delegates", cid+".json")); err == nil {
		return 1
	}
	return 0
}

// The agent SIGKILLed at random points of a pod's ADD (MULTINET_AGENT_KILL_TRIALS, default
// 100): the kill times are drawn over the whole ADD, as long as one takes here; the runtime's
// DEL then runs through the shim with the agent still down (the shim's DEL from the on-disk
// cache, the sriov binary exec'd) or, every other trial, through the restarted agent. After
// it nothing is left: the host's links as before the pod (every VF back under its name with
// its MAC and MTU), no pod interface, no lease, delegate cache, network-status, sriov record
// or runtime cache, and doctor finds nothing. The step each kill landed in (from the agent's
// log) is counted: the kills must cover the ADD, not only its start or its end.
func TestFaultAgentKilledAtRandomPointsOfAdd(t *testing.T) {
	trials := envInt(t, "MULTINET_AGENT_KILL_TRIALS", 100)
	v := newVFNode(t, 2)
	v.startVFAgent()
	conf := v.conf("multinet-shim", map[string]interface{}{"agentWait": "3s"})

	// The baseline and how long an ADD takes: three ADDs without a kill (the cluster bridge
	// stays by design).
	var full time.Duration
	for i := 0; i < 3; i++ {
		p := v.vfPod(fmt.Sprintf("warm%d", i), i%2, conf)
		start := time.Now()
		if _, err := p.add(); err != nil {
			t.Fatalf("ADD without a kill: %v\n%s", err, v.log())
		}
		full = max(full, time.Since(start))
		if got := p.links(); len(got) != 3 {
			t.Fatalf("pod interfaces %v, want eth0, net1, net2", got)
		}
		if err := p.del(); err != nil {
			t.Fatal(err)
		}
	}
	base := v.hostLinks()
	if left := v.leftovers(base, nil, nil); left != "" {
		t.Fatalf("after the warm-up pods: %s", left)
	}

	rng := rand.New(rand.NewPCG(17, uint64(time.Now().UnixNano())))
	hits := make([]int, len(agentSteps))
	viaAgent, cut := 0, 0
	for i := 0; i < trials; i++ {
		if v.agent == nil {
			v.startVFAgent()
		}
		cid := fmt.Sprintf("ctr-k%d", i)
		p := v.vfPod(fmt.Sprintf("k%d", i), i%2, conf)
		at := time.Duration(rng.Int64N(int64(full)))
		done := make(chan error, 1)
		go func() { _, err := p.add(); done <- err }()
		time.Sleep(at)
		v.killAgent()
		addErr := <-done
		step := v.stepAt(v.log(), cid)
		hits[step]++
		restart := i%2 == 1
		if restart {
			v.startVFAgent()
			viaAgent++
		}
		if err := p.del(); err != nil {
			t.Fatalf("trial %d (killed after %s of %s, at %q; ADD: %v): DEL (agent restarted: %v): %v\n%s", i, at, full, agentSteps[step], addErr, restart, err, v.log())
		}
		if left := v.leftovers(base, p, &cut); left != "" {
			t.Fatalf("trial %d (killed after %s of %s, at %q; ADD: %v; DEL through the restarted agent: %v): left %s", i, at, full, agentSteps[step], addErr, restart, left)
		}
	}
	var cover []string
	inside := 0
	for s, n := range hits {
		cover = append(cover, fmt.Sprintf("%s %d", agentSteps[s], n))
		if s >= 1 && s <= 4 && n > 0 {
			inside++
		}
	}
	t.Logf("%d trials (ADD takes up to %s here; %d DELs through the restarted agent, %d through the shim alone): kills by step: %s; macvlans cut before their rename, gone with the pod's netns: %d",
		trials, full, viaAgent, trials-viaAgent, strings.Join(cover, ", "), cut)
	if trials >= 50 && inside < 3 {
		t.Errorf("kills landed in %d of the 4 steps inside the ADD: the random points do not cover it", inside)
	}
}

// pluginCall is what the runtime passes a CNI plugin for p's cmd: its env and its stdin (the
// list's plugin conf with the list's name and cniVersion, as libcni writes it).
func (p *pod) pluginCall(cmd string) ([]string, []byte) {
	var list map[string]any
	json.Unmarshal(p.list.Bytes, &list)
	plugin := list["plugins"].([]any)[0].(map[string]any)
	plugin["cniVersion"], plugin["name"] = list["cniVersion"], list["name"]
	stdin, _ := json.Marshal(plugin)
	var args []string
	for _, a := range p.rt.Args {
		args = append(args, a[0]+"="+a[1])
	}
	env := append(os.Environ(), "CNI_COMMAND="+cmd, "CNI_CONTAINERID="+p.rt.ContainerID, "CNI_NETNS="+p.rt.NetNS,
		"CNI_IFNAME="+p.rt.IfName, "CNI_PATH="+strings.Join(p.cni.Path, ":"), "CNI_ARGS="+strings.Join(args, ";"))
	return env, stdin
}

// killPlugin runs the plugin binary bin for p's ADD as the runtime does and SIGKILLs it after
// at (never when at < 0), as a runtime's timeout or the OOM killer does: the plugin process
// only. It waits for what the plugin had started (its delegates) to finish: the runtime's DEL
// comes after its own timeout.
func (v *vfNode) killPlugin(p *pod, bin string, at time.Duration) (killed bool, err error) {
	env, stdin := p.pluginCall("ADD")
	cmd := exec.Command(bin)
	cmd.Env, cmd.Stdin = env, bytes.NewReader(stdin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := v.host.Do(func(ns.NetNS) error { return cmd.Start() }); err != nil {
		return false, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if at >= 0 {
		select {
		case err = <-exited:
		case <-time.After(at):
			cmd.Process.Signal(syscall.SIGKILL)
			err = <-exited
		}
	} else {
		err = <-exited
	}
	var ee *exec.ExitError
	killed = errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL
	waitGroupGone(v.t, cmd.Process.Pid)
	if err != nil && !killed {
		err = fmt.Errorf("%w: %s", err, out.String())
	}
	return killed, err
}

// The shim (thick) and the thin plugin, each SIGKILLed at random points of a pod's ADD
// (MULTINET_PLUGIN_KILL_TRIALS each, default 20): the agent finishes an ADD whose shim died
// (its answer lost) and serializes the runtime's DEL after it; the thin plugin's delegates
// finish on their own. The runtime's DEL then leaves nothing, as in the agent's kill test.
func TestFaultShimAndThinPluginKilledMidAdd(t *testing.T) {
	trials := envInt(t, "MULTINET_PLUGIN_KILL_TRIALS", 20)
	v := newVFNode(t, 2)
	v.startVFAgent()
	for _, mode := range []struct{ name, bin, typ string }{
		{"shim", filepath.Join(binDir, "multinet-shim"), "multinet-shim"},
		{"thin", filepath.Join(binDir, "multinet"), "multinet"},
	} {
		t.Run(mode.name, func(t *testing.T) {
			conf := v.conf(mode.typ, map[string]interface{}{"agentWait": "3s"})
			p := v.vfPod(mode.name+"-warm", 0, conf)
			start := time.Now()
			if _, err := v.killPlugin(p, mode.bin, -1); err != nil {
				t.Fatalf("ADD without a kill: %v", err)
			}
			full := time.Since(start)
			if got := p.links(); len(got) != 3 {
				t.Fatalf("pod interfaces %v, want eth0, net1, net2", got)
			}
			if err := p.del(); err != nil {
				t.Fatal(err)
			}
			base := v.hostLinks()
			cut := 0
			if left := v.leftovers(base, p, &cut); left != "" {
				t.Fatalf("after the warm-up pod: %s", left)
			}
			rng := rand.New(rand.NewPCG(13, uint64(time.Now().UnixNano())))
			killed := 0
			for i := 0; i < trials; i++ {
				p := v.vfPod(fmt.Sprintf("%s-k%d", mode.name, i), i%2, conf)
				at := time.Duration(rng.Int64N(int64(full)))
				k, err := v.killPlugin(p, mode.bin, at)
				if k {
					killed++
				}
				if derr := p.del(); derr != nil {
					t.Fatalf("trial %d (killed after %s of %s: %v; ADD: %v): DEL: %v", i, at, full, k, err, derr)
				}
				if left := v.leftovers(base, p, &cut); left != "" {
					t.Fatalf("trial %d (killed after %s of %s: %v; ADD: %v): left %s", i, at, full, k, err, left)
				}
			}
			t.Logf("%s: %d trials over an ADD of %s, %d killed before they finished, %d macvlans cut before their rename", mode.name, trials, full, killed, cut)
			if trials >= 10 && killed < trials/2 {
				t.Errorf("only %d of %d kills landed before the ADD finished", killed, trials)
			}
		})
	}
}
