package benchmarks

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/multinet-io/multinet/sriovcni"
)

// daemon is a thick stack's node daemon (multinetd, multus-daemon), started by the API server's
// launcher so it dies with the benchmark, in a cpuacct cgroup of its own: the CPU a thick ADD
// costs is the shim's plus the daemon's, delegates it forks included.
type daemon struct {
	name   string
	cmd    *exec.Cmd
	cgroup string // cgroup dir ("" none: CPU from /proc/<pid>/stat, 10 ms ticks)
	cgV2   bool
}

// cgroupRoot is where a cpuacct (v1) or unified (v2) cgroup for a daemon is made.
func newCgroup(name string) (dir string, v2 bool) {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		dir, v2 = filepath.Join("/sys/fs/cgroup", name), true
	} else {
		dir = filepath.Join("/sys/fs/cgroup/cpuacct", name)
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
		return "", false
	}
	return dir, v2
}

func (a *APIServer) startDaemon(logw *os.File, name, bin string, env []string, args ...string) (*daemon, error) {
	if err := a.startEnv(logw, name, bin, env, args...); err != nil {
		return nil, err
	}
	d := &daemon{name: name, cmd: a.procs[len(a.procs)-1]}
	cg, v2 := newCgroup(fmt.Sprintf("multinet-bench-%d-%s", os.Getpid(), name))
	if cg != "" {
		if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(d.cmd.Process.Pid)), 0o644); err == nil {
			d.cgroup, d.cgV2 = cg, v2
		} else {
			os.Remove(cg)
		}
	}
	return d, nil
}

// cpu is the daemon's CPU time so far, with the delegates it ran.
func (d *daemon) cpu() time.Duration {
	if d.cgroup != "" {
		if d.cgV2 {
			b, _ := os.ReadFile(filepath.Join(d.cgroup, "cpu.stat"))
			for _, l := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(l, "usage_usec "); ok {
					n, _ := strconv.ParseInt(v, 10, 64)
					return time.Duration(n) * time.Microsecond
				}
			}
			return 0
		}
		b, _ := os.ReadFile(filepath.Join(d.cgroup, "cpuacct.usage"))
		n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return time.Duration(n)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", d.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	return statCPU(string(b))
}

// statCPU is utime+stime+cutime+cstime of a /proc/<pid>/stat line (USER_HZ 100).
func statCPU(stat string) time.Duration {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(stat[i+1:])
	// After the command: state is field 3 of the line, utime field 14 (f[11]).
	if len(f) < 15 {
		return 0
	}
	var t int64
	for _, s := range f[11:15] {
		n, _ := strconv.ParseInt(s, 10, 64)
		t += n
	}
	return time.Duration(t) * 10 * time.Millisecond
}

// mem is the daemon's resident set now and its peak (VmHWM) since start or resetPeak.
func (d *daemon) mem() (rssKB, peakKB int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		return 0, 0
	}
	return statusMem(string(b))
}

func statusMem(status string) (rssKB, peakKB int64) {
	for _, l := range strings.Split(status, "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rssKB = n
		case "VmHWM":
			peakKB = n
		}
	}
	return rssKB, peakKB
}

// anonKB is the daemon's anonymous resident memory (heap, stacks): its RSS minus the pages of
// its binary and other files it maps.
func (d *daemon) anonKB() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", d.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Anonymous:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// resetPeak starts a new VmHWM window (clear_refs 5).
func (d *daemon) resetPeak() {
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", d.cmd.Process.Pid), []byte("5"), 0o200)
}

// removeCgroup removes the daemon's cgroup once it has exited; the kernel lets go of a cgroup
// a moment after its last process was reaped, hence the retries.
func (d *daemon) removeCgroup() {
	if d.cgroup == "" {
		return
	}
	for i := 0; i < 50 && os.Remove(d.cgroup) != nil; i++ {
		if _, err := os.Stat(d.cgroup); err != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitFile waits for a file a daemon writes once it is ready.
func waitFile(a *APIServer, path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if err := a.Alive(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not there after %s", path, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startMultinetd starts the agent as its DaemonSet would (API client, this node's name, the
// sriov delegate in-process) and returns once /readyz answers: caches synced, socket served.
func (b *Bench) startMultinetd(logw *os.File, socket, metricsAddr string) (*daemon, error) {
	d, err := b.api.startDaemon(logw, "multinetd", filepath.Join(b.o.BinDir, "multinetd"), nil,
		"--kubeconfig", b.api.Kubeconfig, "--node-name", benchNode, "--socket", socket, "--metrics-addr", metricsAddr,
		"--log-level", "warn")
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + metricsAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return d, nil
			}
		}
		if err := b.api.Alive(); err != nil {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("multinetd not ready after 60s (log %s)", logw.Name())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// multinetThickConf is `multinet config generate --mode thick` on this node, binDir pinned.
func multinetThickConf(multinet, confDir, cacheDir, binDir, socket string) ([]byte, error) {
	out, err := exec.Command(multinet, "config", "generate", "--mode", "thick", "--socket", socket, "--conf-dir", confDir,
		"--cache-dir", cacheDir, "--bin-dir", binDir).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("multinet config generate --mode thick: %w: %s", err, out)
	}
	p := filepath.Join(confDir, "00-multinet.conflist")
	c, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	return c, os.Remove(p)
}

// Where the in-cluster config is read from (a pod's service account mount). /run is the
// benchmark's own tmpfs (Isolate), /var/run a link to it.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// startMultusDaemon starts upstream multus-daemon as its thick DaemonSet does, outside a pod:
// the in-cluster config (a token and the serving cert as ca.crt where a pod has them, the
// service host and port in env), MULTUS_NODE_NAME the pods' spec.nodeName (else every ADD waits
// 2.5 s for the pod and network-status is not written), "multusConfigFile": "auto" generating
// 00-multus.conf from the node's cluster network into its own conf dir once its caches synced.
// It returns the daemon and that conf as a conflist for libcni.
func (b *Bench) startMultusDaemon(logw *os.File, tag, binDir string) (*daemon, []byte, error) {
	if err := os.MkdirAll(serviceAccountDir, 0o755); err != nil {
		return nil, nil, err
	}
	crt, err := os.ReadFile(filepath.Join(b.api.Dir, "serving.crt"))
	if err != nil {
		return nil, nil, err
	}
	for name, v := range map[string][]byte{"token": []byte(adminToken), "ca.crt": crt, "namespace": []byte("kube-system")} {
		if err := os.WriteFile(filepath.Join(serviceAccountDir, name), v, 0o600); err != nil {
			return nil, nil, err
		}
	}
	dir := filepath.Join(b.o.Dir, "multus-thick-"+tag)
	confDir, sockDir := filepath.Join(dir, "net.d"), filepath.Join(dir, "run")
	for _, d := range []string{confDir, sockDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, nil, err
		}
	}
	cfg := map[string]interface{}{
		"cniVersion": "1.0.0", "chrootDir": "", "logToStderr": true, "logLevel": "error", "logFile": "",
		"multusConfigFile": "auto", "multusAutoconfigDir": b.node.ConfDir, "cniConfigDir": confDir,
		"socketDir": sockDir, "daemonSocketDir": sockDir, "binDir": binDir,
		"cniDir": filepath.Join(b.o.Dir, "multus-thick-cache"),
	}
	cb, _ := json.Marshal(cfg)
	cfgFile := filepath.Join(dir, "daemon-config.json")
	if err := os.WriteFile(cfgFile, cb, 0o644); err != nil {
		return nil, nil, err
	}
	env := []string{"MULTUS_NODE_NAME=" + benchNode, "KUBERNETES_SERVICE_HOST=127.0.0.1", fmt.Sprintf("KUBERNETES_SERVICE_PORT=%d", apiPort)}
	d, err := b.api.startDaemon(logw, "multus-daemon-"+tag, b.o.MultusDaemonBin, env, "-config", cfgFile)
	if err != nil {
		return nil, nil, err
	}
	conf := filepath.Join(confDir, "00-multus.conf")
	if err := waitFile(b.api, conf, 60*time.Second); err != nil {
		return nil, nil, fmt.Errorf("multus-daemon (log %s): %w", logw.Name(), err)
	}
	if err := waitFile(b.api, filepath.Join(sockDir, "multus.sock"), 30*time.Second); err != nil {
		return nil, nil, fmt.Errorf("multus-daemon (log %s): %w", logw.Name(), err)
	}
	c, err := libcni.ConfFromFile(conf)
	if err != nil {
		return nil, nil, err
	}
	list, err := libcni.ConfListFromConf(c)
	if err != nil {
		return nil, nil, err
	}
	return d, list.Bytes, nil
}

// delegateSum is one series of the agent's per-delegate histogram: seconds and calls so far.
type delegateSum struct {
	Seconds float64
	Count   int64
}

// parseDelegateMetrics reads the _sum and _count of the agent's two latency histograms from its
// /metrics text: multinet_cni_delegate_duration_seconds keyed "plugin/command/inprocess",
// multinet_cni_request_duration_seconds keyed "request/command".
func parseDelegateMetrics(r io.Reader) (map[string]delegateSum, error) {
	out := map[string]delegateSum{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		l := sc.Text()
		var rest string
		var request bool
		if v, ok := strings.CutPrefix(l, "multinet_cni_delegate_duration_seconds"); ok {
			rest = v
		} else if v, ok := strings.CutPrefix(l, "multinet_cni_request_duration_seconds"); ok {
			rest, request = v, true
		} else {
			continue
		}
		var suffix string
		switch {
		case strings.HasPrefix(rest, "_sum{"):
			suffix, rest = "sum", rest[len("_sum"):]
		case strings.HasPrefix(rest, "_count{"):
			suffix, rest = "count", rest[len("_count"):]
		default:
			continue
		}
		end := strings.LastIndexByte(rest, '}')
		if end < 0 {
			return nil, fmt.Errorf("metrics line %q: no closing brace", l)
		}
		labels := map[string]string{}
		for _, kv := range strings.Split(rest[1:end], ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				continue
			}
			labels[k] = strings.Trim(v, `"`)
		}
		val, err := strconv.ParseFloat(strings.TrimSpace(rest[end+1:]), 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", l, err)
		}
		key := labels["plugin"] + "/" + labels["command"] + "/" + labels["inprocess"]
		if request {
			key = "request/" + labels["command"]
		}
		s := out[key]
		if suffix == "sum" {
			s.Seconds = val
		} else {
			s.Count = int64(val)
		}
		out[key] = s
	}
	return out, sc.Err()
}

func scrapeDelegates(addr string) map[string]delegateSum {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	req.Header.Set("Accept-Encoding", "identity") // spare the agent a gzip per scrape
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	m, _ := parseDelegateMetrics(resp.Body)
	return m
}

// inProcessDelta is the time and calls of in-process delegates for cmd between two scrapes.
func inProcessDelta(before, after map[string]delegateSum, cmd string) (time.Duration, int64) {
	return delegateDelta(before, after, cmd, true)
}

// delegateDelta is the time and calls of the delegates for cmd between two scrapes: the
// in-process ones only, or all.
func delegateDelta(before, after map[string]delegateSum, cmd string, inProcessOnly bool) (time.Duration, int64) {
	var sec float64
	var n int64
	for k, a := range after {
		parts := strings.Split(k, "/")
		if len(parts) != 3 || parts[1] != cmd || (inProcessOnly && parts[2] != "true") {
			continue
		}
		b := before[k]
		sec += a.Seconds - b.Seconds
		n += a.Count - b.Count
	}
	return time.Duration(sec * float64(time.Second)), n
}

// requestDelta is the agent's time serving cmd between two scrapes.
func requestDelta(before, after map[string]delegateSum, cmd string) time.Duration {
	k := "request/" + cmd
	return time.Duration((after[k].Seconds - before[k].Seconds) * float64(time.Second))
}

// setupThick starts the thick stacks' daemons and writes their confs: multinetd (one agent for
// both passes: the conf names the bin dir) and multus-daemon (one per pass: its config names
// the bin dir).
func (b *Bench) setupThick() error {
	o := b.o
	logf, err := os.Create(filepath.Join(o.Dir, "multinetd.log"))
	if err != nil {
		return err
	}
	socket := "/run/multinet-bench/multinet.sock"
	const metricsAddr = "127.0.0.1:9109"
	cache := filepath.Join(o.Dir, "multinet-thick-cache")
	d, err := b.startMultinetd(logf, socket, metricsAddr)
	if err != nil {
		return err
	}
	mt := &Stack{Name: "multinet-thick", conf: map[string][]byte{}, daemon: map[bool]*daemon{false: d, true: d},
		metricsAddr: metricsAddr, stateDirs: []string{cache, sriovcni.DefaultStateDir}}
	for _, wrapped := range []bool{false, true} {
		if mt.conf[b.binDir[wrapped]], err = multinetThickConf(filepath.Join(o.BinDir, "multinet"), b.node.ConfDir, cache, b.binDir[wrapped], socket); err != nil {
			return err
		}
	}
	b.stacks = append(b.stacks, mt)
	if o.MultusDaemonBin == "" || o.MultusShimBin == "" {
		return nil
	}
	ut := &Stack{Name: "multus-thick", conf: map[string][]byte{}, daemon: map[bool]*daemon{},
		stateDirs: []string{filepath.Join(o.Dir, "multus-thick-cache"), sriovcni.DefaultStateDir}}
	for _, wrapped := range []bool{false, true} {
		tag := "plain"
		if wrapped {
			tag = "wrapped"
		}
		logf, err := os.Create(filepath.Join(o.Dir, "multus-daemon-"+tag+".log"))
		if err != nil {
			return err
		}
		d, conf, err := b.startMultusDaemon(logf, tag, b.binDir[wrapped])
		if err != nil {
			return err
		}
		ut.daemon[wrapped], ut.conf[b.binDir[wrapped]] = d, conf
	}
	b.stacks = append(b.stacks, ut)
	return nil
}

// APIRequest is the API server's own account of one kind of request over the run: how many,
// and their mean time inside the API server (apiserver_request_duration_seconds).
type APIRequest struct {
	Count  int64   `json:"count"`
	MeanMS float64 `json:"mean_ms"`
}

// parseAPIMetrics reads apiserver_request_duration_seconds's _sum and _count for the pod
// requests a CNI stack makes on ADD and DEL, keyed "VERB resource[/subresource]".
func parseAPIMetrics(r io.Reader) (map[string]APIRequest, error) {
	const name = "apiserver_request_duration_seconds"
	sums, counts := map[string]float64{}, map[string]int64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		rest, ok := strings.CutPrefix(l, name)
		if !ok {
			continue
		}
		var isSum bool
		switch {
		case strings.HasPrefix(rest, "_sum{"):
			isSum, rest = true, rest[len("_sum"):]
		case strings.HasPrefix(rest, "_count{"):
			rest = rest[len("_count"):]
		default:
			continue
		}
		end := strings.LastIndexByte(rest, '}')
		if end < 0 {
			return nil, fmt.Errorf("metrics line %q: no closing brace", l)
		}
		labels := map[string]string{}
		for _, kv := range strings.Split(rest[1:end], ",") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				labels[k] = strings.Trim(v, `"`)
			}
		}
		if labels["resource"] != "pods" || labels["verb"] == "WATCH" || labels["verb"] == "LIST" {
			continue
		}
		key := labels["verb"] + " pods"
		if labels["subresource"] != "" {
			key += "/" + labels["subresource"]
		}
		val, err := strconv.ParseFloat(strings.TrimSpace(rest[end+1:]), 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", l, err)
		}
		// Series differ by scope, component and dry run: add them up.
		if isSum {
			sums[key] += val
		} else {
			counts[key] += int64(val)
		}
	}
	out := map[string]APIRequest{}
	for k, n := range counts {
		if n > 0 {
			out[k] = APIRequest{Count: n, MeanMS: math.Round(sums[k]/float64(n)*1e5) / 100}
		}
	}
	return out, sc.Err()
}
