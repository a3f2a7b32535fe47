package benchmarks

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/multinet-io/multinet/sriovcni"
)

// Scenario is one pod shape: its networks annotation, the VFs kubelet gives it, and how many
// pods attach at once.
type Scenario struct {
	Name        string
	Networks    string
	VFs         int
	Concurrency int
	// Optional scenarios run only when named (-only); ThickOnly ones skip the thin stacks
	// (200 meta-plugin processes at once measure the machine, not the stack).
	Optional, ThickOnly bool
}

// Scenarios are the measured pod shapes; names are part of the JSON contract.
var Scenarios = []Scenario{
	{Name: "eth0"},
	{Name: "eth0+1vf", Networks: "sriov-a", VFs: 1, Concurrency: 1},
	{Name: "eth0+4", Networks: "sriov-a,sriov-b,macvlan-a,macvlan-b", VFs: 2, Concurrency: 1},
	{Name: "eth0+1vf-x16", Networks: "sriov-a", VFs: 1, Concurrency: 16},
	// A node's pods all (re)started at once, e.g. after a reboot: the agent's peak RSS.
	{Name: HerdScenario, Concurrency: 200, Optional: true, ThickOnly: true},
}

// HerdScenario is 200 eth0 pods attached at once (one round).
const HerdScenario = "herd200"

// The node the pods are on: the thick daemons cache its pods only.
const benchNode = "node1"

func (s Scenario) attachments() int {
	if s.Networks == "" {
		return 0
	}
	return len(strings.Split(s.Networks, ","))
}

func (s Scenario) concurrency() int {
	if s.Concurrency < 1 {
		return 1
	}
	return s.Concurrency
}

// Options of one benchmark run.
type Options struct {
	Dir       string // scratch dir (removed by the caller)
	BinDir    string // multinet, sriov
	WrapBin   string // the delegate timing wrapper
	MultusBin string // "" skips Multus
	// Multus thick mode's daemon and shim; "" skips the multus-thick stack.
	MultusDaemonBin, MultusShimBin string
	// Stacks, when not empty, keeps only these stacks (the floor always runs).
	Stacks []string
	// NoThick skips both thick stacks (multinetd + multinet-shim, multus-daemon + multus-shim).
	NoThick bool
	// Scale, after the scenarios: 5,000 pods on other nodes and 2,000 NADs into the API
	// server, and the thick daemons' RSS before and after.
	Scale       bool
	RefPlugins  string // reference plugins (bridge, host-local, macvlan, portmap)
	ToolsDir    string // etcd, kube-apiserver
	CRDDir      string
	Cycles      int    // sequential pod cycles per scenario and stack
	Rounds      int    // rounds of the concurrent scenario
	ShareCycles int    // cycles of the wrapped pass that measures the meta-plugin's own share
	Only        string // run only this scenario ("" all)
	// MultusClusterNetworkPath configures Multus with clusterNetwork = the conflist path
	// instead of its thin_entrypoint's inline delegate.
	MultusClusterNetworkPath bool
	Log                      *slog.Logger

	// For the report.
	MultusVersion, MultinetVersion, K8sVersion, EtcdVersion string
}

// Bench is a prepared node with its API server and stacks.
type Bench struct {
	o            Options
	node         *Node
	api          *APIServer
	stacks       []*Stack
	binDir       map[bool]string // wrapped? -> CNI bin dir
	delLog       string
	wrapOverhead time.Duration
	floor        *Floor
	logf         *os.File
}

const podNamespace = "bench"

// sample is one pod's ADD and DEL.
type sample struct {
	add, del             time.Duration
	addShare, delShare   time.Duration
	hasShare             bool
	addUsage, delUsage   procUsage
	daemonCPU            time.Duration // thick: the daemon's share of addUsage.CPU
	addErr, delErr, vErr error
	leaks                leaks
	agent                *agentSplit // multinetd's metrics over the plain pass
	// delegates: the wrapped pass's ADD time per delegate call, by plugin type
	// ("sriov(in-process)" from multinetd's metrics).
	delegates map[string][]time.Duration
}

// agentSplit is one pod's calls as multinetd's metrics saw them (the round's mean per pod).
type agentSplit struct {
	add, addDelegates, del, delDelegates time.Duration
}

// Run prepares the node, runs every scenario with every stack interleaved, and returns the
// report.
func Run(o Options) (*Report, error) {
	b := &Bench{o: o, binDir: map[bool]string{}}
	defer b.close()
	if err := b.setup(); err != nil {
		return nil, err
	}
	rep := &Report{Machine: Machine(o), DaemonMem: map[string]*DaemonMem{}}
	for _, st := range b.stacks {
		if d := st.daemon[false]; d != nil {
			rss, _ := d.mem()
			rep.DaemonMem[d.name] = &DaemonMem{StartKB: rss}
		}
	}
	for _, sc := range Scenarios {
		if (o.Only == "" && sc.Optional) || (o.Only != "" && o.Only != sc.Name) {
			continue
		}
		if sc.Name == HerdScenario {
			for _, st := range b.stacks {
				if d := st.daemon[false]; d != nil {
					d.resetPeak()
				}
			}
		}
		o.Log.Info("scenario", "name", sc.Name)
		n := o.Cycles
		if sc.concurrency() > 1 {
			n = o.Rounds
		}
		if sc.Optional {
			n = 1 // the herd: one round
		}
		plain := map[string][]sample{}
		for i := 0; i < n; i++ {
			if err := b.api.Alive(); err != nil {
				return rep, err
			}
			// Rotate the order so neither stack always runs right after the other.
			order := b.stackOrder(i, sc)
			for _, st := range order {
				plain[st] = append(plain[st], b.round(st, sc, false, fmt.Sprintf("%d", i))...)
			}
		}
		shares := map[string][]sample{}
		sn := o.ShareCycles
		if sc.concurrency() > 1 && sn > 0 {
			sn = 1 // one round of 16 pods is 16 samples
		}
		if sc.Optional {
			sn = 0 // the herd measures memory and failures, not shares
		}
		for i := 0; i < sn; i++ {
			for _, st := range b.stackOrder(i, sc) {
				if st == "floor" {
					continue
				}
				shares[st] = append(shares[st], b.round(st, sc, true, fmt.Sprintf("w%d", i))...)
			}
		}
		for _, st := range b.stackOrder(0, sc) {
			rep.Scenarios = append(rep.Scenarios, summarize(sc.Name, st, plain[st], shares[st]))
		}
		for _, pr := range [][2]string{{"multinet", "multus"}, {"multinet-thick", "multus-thick"}, {"multinet-thick", "multus"}} {
			if _, ok := plain[pr[1]]; ok && plain[pr[0]] != nil {
				rep.Paired = append(rep.Paired, pair(sc.Name, pr[0], pr[1], plain[pr[0]], plain[pr[1]]))
			}
		}
		for _, st := range b.stacks {
			d := st.daemon[false]
			if d == nil {
				continue
			}
			rss, peak := d.mem()
			if sc.Name == HerdScenario {
				rep.DaemonMem[d.name].HerdPeakKB = peak
			} else {
				rep.DaemonMem[d.name].EndKB, rep.DaemonMem[d.name].PeakKB = rss, peak
				rep.DaemonMem[d.name].EndAnonKB = d.anonKB()
			}
		}
		if err := b.node.HostVFsHome(); err != nil {
			o.Log.Error("after scenario", "name", sc.Name, "err", err)
			if err := b.floor.rescueAll(); err != nil {
				return rep, err
			}
		}
	}
	if o.Scale {
		if err := b.scale(rep); err != nil {
			return rep, fmt.Errorf("scale: %w", err)
		}
	}
	if err := b.api.Alive(); err != nil {
		return rep, err
	}
	if raw, err := b.api.Kube.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background()); err == nil {
		rep.APIRequests, _ = parseAPIMetrics(bytes.NewReader(raw))
	}
	b.api.Stop()
	rep.Daemons = b.api.PeakRSSKB
	rep.WrapOverheadMS = ms(b.wrapOverhead)
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		rep.HarnessMaxRSSKB = ru.Maxrss
	}
	rep.Targets = Targets(rep)
	for _, s := range rep.Scenarios {
		if strings.HasPrefix(s.Stack, "multinet") && (s.AddFailures > 0 || s.DelFailures > 0 || s.WrongAttach > 0 || s.Leaks.any()) {
			return rep, fmt.Errorf("%s failed in %s: %s (leaks %+v)", s.Stack, s.Name, s.FirstError, s.Leaks)
		}
	}
	return rep, nil
}

func (b *Bench) stackOrder(i int, sc Scenario) []string {
	names := []string{}
	for _, s := range b.stacks {
		if sc.ThickOnly && !s.thick() {
			continue
		}
		names = append(names, s.Name)
	}
	names = append(names, "floor")
	k := i % len(names)
	return append(append([]string{}, names[k:]...), names[:k]...)
}

func (b *Bench) close() {
	if b.api != nil {
		b.api.Stop()
	}
	for _, s := range b.stacks {
		for _, d := range s.daemon {
			d.removeCgroup()
		}
	}
}

func (b *Bench) setup() error {
	o := b.o
	var err error
	nVFs := 32
	if b.node, err = NewNode(o.Dir, nVFs); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	os.Setenv("MULTINET_SYSFS_ROOT", b.node.Tree.Root)
	apiDir := filepath.Join(o.Dir, "api")
	os.MkdirAll(apiDir, 0o755)
	logf, err := os.Create(filepath.Join(o.Dir, "api.log"))
	if err != nil {
		return err
	}
	b.logf = logf
	if b.api, err = StartAPIServer(o.ToolsDir, apiDir, o.CRDDir, logf); err != nil {
		return fmt.Errorf("api server (log %s): %w", logf.Name(), err)
	}
	ctx := context.Background()
	if _, err := b.api.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: podNamespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	// No controller-manager creates the default service account; pods need it to be admitted.
	if _, err := b.api.Kube.CoreV1().ServiceAccounts(podNamespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	ipam := func(subnet string) string {
		return fmt.Sprintf(`"ipam": {"type": "host-local", "dataDir": %q, "subnet": %q}`, b.node.IPAMDir, subnet)
	}
	nads := []struct{ name, conf string }{
		{"sriov-a", `{"cniVersion": "1.0.0", "name": "sriov-a", "type": "sriov", ` + ipam("10.56.0.0/16") + `}`},
		{"sriov-b", `{"cniVersion": "1.0.0", "name": "sriov-b", "type": "sriov", ` + ipam("10.57.0.0/16") + `}`},
		{"macvlan-a", `{"cniVersion": "1.0.0", "name": "macvlan-a", "type": "macvlan", "master": "eth0", "mode": "bridge", ` + ipam("10.58.0.0/16") + `}`},
		{"macvlan-b", `{"cniVersion": "1.0.0", "name": "macvlan-b", "type": "macvlan", "master": "eth0", "mode": "bridge", ` + ipam("10.59.0.0/16") + `}`},
	}
	for _, n := range nads {
		nad := &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Name: n.name, Namespace: podNamespace},
			Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: n.conf}}
		if strings.HasPrefix(n.name, "sriov") {
			nad.Annotations = map[string]string{"k8s.v1.cni.cncf.io/resourceName": vfResource}
		}
		if _, err := b.api.NADs.K8sCniCncfIoV1().NetworkAttachmentDefinitions(podNamespace).Create(ctx, nad, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("NAD %s: %w", n.name, err)
		}
	}

	// The CNI bin dirs: every plugin a symlink; the wrapped one times the delegates.
	plugins := map[string]string{"multinet": filepath.Join(o.BinDir, "multinet"), "sriov": filepath.Join(o.BinDir, "sriov")}
	if o.MultusBin != "" {
		plugins["multus"] = o.MultusBin
	}
	if !o.NoThick {
		plugins["multinet-shim"] = filepath.Join(o.BinDir, "multinet-shim")
		if o.MultusShimBin != "" {
			plugins["multus-shim"] = o.MultusShimBin
		}
	}
	refs, _ := os.ReadDir(o.RefPlugins)
	for _, e := range refs {
		plugins[e.Name()] = filepath.Join(o.RefPlugins, e.Name())
	}
	for _, wrapped := range []bool{false, true} {
		dir := filepath.Join(o.Dir, "cni-bin")
		if wrapped {
			dir += "-wrapped"
		}
		if err := cniBin(dir, plugins, o.WrapBin, wrapped); err != nil {
			return err
		}
		b.binDir[wrapped] = dir
	}
	b.delLog = filepath.Join(o.Dir, "delegates.log")
	os.Setenv("BENCH_REAL_PATH", b.binDir[false])
	os.Setenv("BENCH_DELEGATE_LOG", b.delLog)

	mn := &Stack{Name: "multinet", conf: map[string][]byte{}, stateDirs: []string{filepath.Join(o.Dir, "multinet-cache"), sriovcni.DefaultStateDir}}
	mu := &Stack{Name: "multus", conf: map[string][]byte{}, stateDirs: []string{filepath.Join(o.Dir, "multus-cache"), sriovcni.DefaultStateDir}}
	for _, wrapped := range []bool{false, true} {
		dir := b.binDir[wrapped]
		c, err := multinetConf(plugins["multinet"], b.node.ConfDir, b.api.Kubeconfig, filepath.Join(o.Dir, "multinet-cache"), dir)
		if err != nil {
			return err
		}
		mn.conf[dir] = c
		if o.MultusBin != "" {
			if mu.conf[dir], err = multusConf(b.node.ClusterConflist(), b.api.Kubeconfig, filepath.Join(o.Dir, "multus-cache"), dir, o.MultusClusterNetworkPath); err != nil {
				return err
			}
		}
	}
	b.stacks = []*Stack{mn}
	if o.MultusBin != "" {
		b.stacks = append(b.stacks, mu)
	}
	if !o.NoThick {
		if err := b.setupThick(); err != nil {
			return err
		}
	}
	if len(o.Stacks) > 0 {
		var keep []*Stack
		for _, s := range b.stacks {
			if slices.Contains(o.Stacks, s.Name) {
				keep = append(keep, s)
			}
		}
		b.stacks = keep
	}
	for _, s := range b.stacks {
		o.Log.Debug("stack conf", "stack", s.Name, "conf", string(s.conf[b.binDir[false]]))
	}
	b.floor = &Floor{node: b.node}
	if err := b.floor.setup(); err != nil {
		return err
	}
	b.wrapOverhead, err = calibrateWrapper(o.Dir, o.WrapBin)
	return err
}

func (b *Bench) stack(name string) *Stack {
	for _, s := range b.stacks {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// pod is one pod sandbox of a round.
type pod struct {
	name, uid string
	ns        ns.NetNS
	vfs       []string
	rt        *libcni.RuntimeConf
}

// round runs one cycle of a scenario (Concurrency pods at once) on one stack.
func (b *Bench) round(stackName string, sc Scenario, wrapped bool, tag string) []sample {
	k := sc.concurrency()
	out := make([]sample, k)
	pods := make([]*pod, k)
	for j := range pods {
		p, err := b.preparePod(stackName, sc, fmt.Sprintf("%s-%s-%s-%d", stackName, slug(sc.Name), tag, j))
		if err != nil {
			out[j].addErr = err
			continue
		}
		pods[j] = p
	}
	if stackName == "floor" {
		b.parallel(pods, func(j int, p *pod) { out[j].add, out[j].addErr = b.floor.add(p, sc) })
		b.parallel(pods, func(j int, p *pod) { out[j].del, out[j].delErr = b.floor.del(p, sc) })
	} else {
		st := b.stack(stackName)
		conf := st.conf[b.binDir[wrapped]]
		d := st.daemon[wrapped]
		var cpu0 time.Duration
		var m0, m1, m2 map[string]delegateSum
		if st.metricsAddr != "" {
			m0 = scrapeDelegates(st.metricsAddr)
		}
		if d != nil {
			cpu0 = d.cpu() // after the scrape: serving /metrics is no ADD's CPU
		}
		b.parallel(pods, func(j int, p *pod) {
			out[j].add, out[j].addUsage, out[j].addErr = b.cniOp(conf, wrapped, p, true)
		})
		if d != nil {
			// Thick: the shim's CPU (its rusage) plus the daemon's over the ADDs, spread over the
			// pods of the round (the verify below is the harness's, after this).
			per := (d.cpu() - cpu0) / time.Duration(k)
			for j := range out {
				out[j].daemonCPU = per
				out[j].addUsage.CPU += per
			}
		}
		if m0 != nil {
			m1 = scrapeDelegates(st.metricsAddr)
		}
		b.parallel(pods, func(j int, p *pod) {
			if out[j].addErr == nil {
				out[j].vErr = b.verify(p, sc)
			}
		})
		b.parallel(pods, func(j int, p *pod) {
			if out[j].addErr != nil {
				return
			}
			out[j].del, out[j].delUsage, out[j].delErr = b.cniOp(conf, wrapped, p, false)
		})
		if m0 != nil {
			m2 = scrapeDelegates(st.metricsAddr)
		}
		if !wrapped && m0 != nil && k == 1 {
			// Sequential only: with pods at once the round's means hide queueing in the agent,
			// and p50 differences of them mean nothing.
			// multinetd's own account of the plain pass: its time serving the calls and its
			// delegates' (exec'd from it, or in-process), so total = shim and socket + agent's
			// own work + delegates, with no wrapper in the way.
			k := time.Duration(k)
			req := requestDelta(m0, m1, "ADD") / k
			deleg, _ := delegateDelta(m0, m1, "ADD", false)
			reqDel := requestDelta(m1, m2, "DEL") / k
			delegDel, _ := delegateDelta(m1, m2, "DEL", false)
			for j := range out {
				out[j].agent = &agentSplit{add: req, addDelegates: deleg / k, del: reqDel, delDelegates: delegDel / k}
			}
		}
		if !wrapped {
			owners := leaseOwners(b.node.IPAMDir)
			for j, p := range pods {
				if p != nil && out[j].addErr == nil {
					out[j].leaks = b.podLeaks(p, st, owners)
				}
			}
		}
		if wrapped {
			// In-process delegates (multinetd's sriov) are not exec'd, so not wrapped: their time
			// is the agent's own histogram, spread over the round's pods.
			var inAdd, inDel time.Duration
			var inAddN int64
			if m0 != nil {
				inAdd, inAddN = inProcessDelta(m0, m1, "ADD")
				inDel, _ = inProcessDelta(m1, m2, "DEL")
				inAdd, inDel = inAdd/time.Duration(k), inDel/time.Duration(k)
			}
			for j, p := range pods {
				if p == nil {
					continue
				}
				ad, an, per := b.delegateTime(p.rt.ContainerID, "ADD")
				dd, dn, _ := b.delegateTime(p.rt.ContainerID, "DEL")
				out[j].addShare = out[j].add - ad - time.Duration(an)*b.wrapOverhead - inAdd
				out[j].delShare = out[j].del - dd - time.Duration(dn)*b.wrapOverhead - inDel
				out[j].hasShare = true
				if inAddN > 0 {
					// One call per pod's VF: the mean call of the round.
					calls := inAddN / int64(k)
					if calls < 1 {
						calls = 1
					}
					for c := int64(0); c < calls; c++ {
						per["sriov(in-process)"] = append(per["sriov(in-process)"], inAdd/time.Duration(calls))
					}
				}
				out[j].delegates = per
			}
		}
	}
	for j, p := range pods {
		if p == nil {
			continue
		}
		if out[j].addErr != nil || out[j].delErr != nil {
			b.o.Log.Warn("pod failed", "stack", stackName, "scenario", sc.Name, "pod", p.name, "add", out[j].addErr, "del", out[j].delErr)
		}
		if out[j].vErr != nil {
			b.o.Log.Warn("pod attached wrong", "stack", stackName, "scenario", sc.Name, "pod", p.name, "err", out[j].vErr)
		}
		b.cleanupPod(p)
	}
	return out
}

func (b *Bench) parallel(pods []*pod, f func(int, *pod)) {
	var wg sync.WaitGroup
	for j, p := range pods {
		if p == nil {
			continue
		}
		wg.Add(1)
		go func() { defer wg.Done(); f(j, p) }()
	}
	wg.Wait()
}

func slug(s string) string { return strings.NewReplacer("+", "-").Replace(s) }

func (b *Bench) preparePod(stackName string, sc Scenario, name string) (*pod, error) {
	p := &pod{name: name}
	if stackName != "floor" {
		grace, noToken := int64(0), false
		kp := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: podNamespace},
			Spec: corev1.PodSpec{NodeName: benchNode, TerminationGracePeriodSeconds: &grace, AutomountServiceAccountToken: &noToken,
				Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}}}
		if sc.Networks != "" {
			kp.Annotations = map[string]string{"k8s.v1.cni.cncf.io/networks": sc.Networks}
		}
		if sc.VFs > 0 {
			q := resource.MustParse(strconv.Itoa(sc.VFs))
			kp.Spec.Containers[0].Resources = corev1.ResourceRequirements{
				Requests: corev1.ResourceList{vfResource: q}, Limits: corev1.ResourceList{vfResource: q}}
		}
		got, err := b.api.Kube.CoreV1().Pods(podNamespace).Create(context.Background(), kp, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("create pod %s: %w", name, err)
		}
		p.uid = string(got.UID)
	} else {
		p.uid = "floor-" + name
	}
	var err error
	if p.vfs, err = b.node.Allocate(p.uid, sc.VFs); err != nil {
		return nil, err
	}
	if p.ns, err = testutils.NewNS(); err != nil {
		return nil, fmt.Errorf("pod %s netns: %w", name, err)
	}
	p.rt = &libcni.RuntimeConf{ContainerID: "cid-" + name, NetNS: p.ns.Path(), IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", podNamespace}, {"K8S_POD_NAME", name},
			{"K8S_POD_INFRA_CONTAINER_ID", "cid-" + name}, {"K8S_POD_UID", p.uid}}}
	return p, nil
}

func (b *Bench) cleanupPod(p *pod) {
	// A VF left in the pod would die with its netns (veths do): bring it home first.
	b.floor.rescue(p)
	p.ns.Close()
	testutils.UnmountNS(p.ns)
	b.node.Release(p.uid)
	if !strings.HasPrefix(p.uid, "floor-") {
		b.api.Kube.CoreV1().Pods(podNamespace).Delete(context.Background(), p.name, metav1.DeleteOptions{})
	}
}

// cniOp runs ADD or DEL of the stack's conflist through libcni, as the runtime does, timed.
func (b *Bench) cniOp(conf []byte, wrapped bool, p *pod, add bool) (time.Duration, procUsage, error) {
	list, err := libcni.ConfListFromBytes(conf)
	if err != nil {
		return 0, procUsage{}, err
	}
	ex := &usageExec{}
	cni := libcni.NewCNIConfigWithCacheDir([]string{b.binDir[wrapped]}, filepath.Join(b.o.Dir, "runtime-cache"), ex)
	start := time.Now()
	if add {
		_, err = cni.AddNetworkList(context.Background(), list, p.rt)
	} else {
		err = cni.DelNetworkList(context.Background(), list, p.rt)
	}
	d := time.Since(start)
	return d, ex.last(), err
}

// verify checks what a user would: the pod has eth0 and one interface per attachment, and its
// network-status in the API lists them all.
func (b *Bench) verify(p *pod, sc Scenario) error {
	want := 1 + sc.attachments()
	var names []string
	err := p.ns.Do(func(ns.NetNS) error {
		links, err := netlinksafe.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if l.Attrs().Name != "lo" {
				names = append(names, l.Attrs().Name)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(names) != want {
		return fmt.Errorf("pod %s: interfaces %v, want %d", p.name, names, want)
	}
	got, err := b.api.Kube.CoreV1().Pods(podNamespace).Get(context.Background(), p.name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	var st []nadv1.NetworkStatus
	if err := json.Unmarshal([]byte(got.Annotations[nadv1.NetworkStatusAnnot]), &st); err != nil {
		return fmt.Errorf("pod %s: network-status %q: %w", p.name, got.Annotations[nadv1.NetworkStatusAnnot], err)
	}
	if len(st) != want {
		return fmt.Errorf("pod %s: network-status has %d entries, want %d", p.name, len(st), want)
	}
	return nil
}

// delegateTime sums the wrapped delegates' wall time for one container and command, and keeps
// each call's time by plugin type (as the wrapper timed the real plugin).
func (b *Bench) delegateTime(containerID, cmd string) (time.Duration, int, map[string][]time.Duration) {
	per := map[string][]time.Duration{}
	f, err := os.Open(b.delLog)
	if err != nil {
		return 0, 0, per
	}
	defer f.Close()
	var sum time.Duration
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) == 4 && fs[0] == containerID && fs[1] == cmd {
			ns, _ := strconv.ParseInt(fs[3], 10, 64)
			sum += time.Duration(ns)
			n++
			per[fs[2]] = append(per[fs[2]], time.Duration(ns))
		}
	}
	return sum, n, per
}

// calibrateWrapper measures what the wrapper itself adds to a delegate exec (its own start
// and exit, and the extra fork): the median difference between running /bin/true through it
// and directly.
func calibrateWrapper(dir, wrapper string) (time.Duration, error) {
	real, wrapped := filepath.Join(dir, "calib-real"), filepath.Join(dir, "calib-wrapped")
	os.MkdirAll(real, 0o755)
	os.MkdirAll(wrapped, 0o755)
	truePath, err := exec.LookPath("true")
	if err != nil {
		return 0, err
	}
	if err := os.Symlink(truePath, filepath.Join(real, "true")); err != nil {
		return 0, err
	}
	if err := os.Symlink(wrapper, filepath.Join(wrapped, "true")); err != nil {
		return 0, err
	}
	env := append(os.Environ(), "BENCH_REAL_PATH="+real, "BENCH_DELEGATE_LOG="+os.DevNull)
	var direct, through []time.Duration
	for i := 0; i < 40; i++ {
		for _, bin := range []string{filepath.Join(real, "true"), filepath.Join(wrapped, "true")} {
			cmd := exec.Command(bin)
			cmd.Env = env
			start := time.Now()
			if err := cmd.Run(); err != nil {
				return 0, fmt.Errorf("calibrate wrapper %s: %w", bin, err)
			}
			if strings.Contains(bin, "wrapped") {
				through = append(through, time.Since(start))
			} else {
				direct = append(direct, time.Since(start))
			}
		}
	}
	d := time.Duration((Summarize(through).P50 - Summarize(direct).P50) * float64(time.Millisecond))
	if d < 0 {
		d = 0
	}
	return d, nil
}
