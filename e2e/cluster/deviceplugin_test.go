//go:build e2e_cluster

package cluster

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/e2e/cluster/clustertest"
	"github.com/multinet-io/multinet/pci/pcitest"
	"github.com/multinet-io/multinet/podresources"
)

// The simulated SR-IOV node: one PF with four iavf VFs in a fake sysfs tree, served by the real
// multinet-deviceplugin binary to the real kubelet.
const (
	simPF     = "0000:d8:00.0"
	vfRes     = "intel.com/mn_e2e_vf"
	vf2Res    = "intel.com/mn_e2e_vf2"
	vhostRes  = "multinet.io/mn_e2e_vhost"
	busybox   = "multinet.io/busybox:e2e"
	vfEnv     = "PCIDEVICE_INTEL_COM_MN_E2E_VF"
	vhostEnv  = "VHOSTUSER_MULTINET_IO_MN_E2E_VHOST"
	vhostCDir = "/var/run/vhu"
)

func simVF(i int) string { return fmt.Sprintf("0000:d8:02.%d", i) }

type plugin struct {
	cmd *exec.Cmd
	log string
}

func (p *plugin) logText() string { b, _ := os.ReadFile(p.log); return string(b) }

func (p *plugin) count(s string) int { return strings.Count(p.logText(), s) }

// startProcess runs a node daemon of this repo (the device plugin, multinetd) with its output in
// a log file under work and env added to the test's environment, until the test ends (SIGTERM,
// then the log when the test failed).
func startProcess(t *testing.T, work string, env []string, bin string, args ...string) *plugin {
	t.Helper()
	p := &plugin{log: filepath.Join(work, filepath.Base(bin)+".log")}
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		_ = p.cmd.Wait()
		logf.Close()
		if t.Failed() {
			t.Logf("%s log:\n%s", filepath.Base(bin), p.logText())
		}
	})
	return p
}

// buildTool builds a command of this repo into dir.
func buildTool(t *testing.T, pkg, dir string) string {
	t.Helper()
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// importBusybox packs Debian's busybox-static as an image the way cluster-up packs pause.
func importBusybox(t *testing.T, c *clustertest.Cluster) {
	t.Helper()
	tar := filepath.Join(t.TempDir(), "busybox.tar")
	if b, err := exec.Command(filepath.Join(c.Dir, "tools", "clusterctl"), "image", "/bin/busybox", "/bin/busybox", busybox, tar).CombinedOutput(); err != nil {
		t.Fatalf("pack busybox (busybox-static installed by cluster-up?): %v\n%s", err, b)
	}
	if b, err := exec.Command("ctr", "-a", filepath.Join(c.Dir, "containerd", "containerd.sock"), "-n", "k8s.io", "images", "import", tar).CombinedOutput(); err != nil {
		t.Fatalf("import busybox: %v\n%s", err, b)
	}
}

// nodeRes returns the node's capacity and allocatable of a resource (-1 when absent).
func nodeRes(t *testing.T, c *clustertest.Cluster, res string) (capacity, allocatable int64) {
	t.Helper()
	n, err := c.Kube.CoreV1().Nodes().Get(context.Background(), clustertest.Node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	get := func(l corev1.ResourceList) int64 {
		q, ok := l[corev1.ResourceName(res)]
		if !ok {
			return -1
		}
		return q.Value()
	}
	return get(n.Status.Capacity), get(n.Status.Allocatable)
}

func waitNodeRes(t *testing.T, c *clustertest.Cluster, p *plugin, what, res string, capacity, allocatable int64) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(90 * time.Second)
	for {
		cp, al := nodeRes(t, c, res)
		if cp == capacity && al == allocatable {
			t.Logf("%s: node shows %s capacity %d allocatable %d after %s", what, res, cp, al, time.Since(start).Round(100*time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: node %s capacity %d allocatable %d, want %d/%d\nplugin log:\n%s", what, res, cp, al, capacity, allocatable, p.logText())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func writeConfig(t *testing.T, path, cfg string) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// restartKubelet stops the cluster's kubelet and starts it again with the same command line,
// as a node upgrade or crash would; cluster-down finds it through the same pid file.
func restartKubelet(t *testing.T, c *clustertest.Cluster) {
	t.Helper()
	pidFile := filepath.Join(c.Dir, "run", "kubelet.pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatalf("kubelet pid %d: %v", pid, err)
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	if syscall.Kill(pid, 0) == nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		time.Sleep(200 * time.Millisecond)
	}
	logf, err := os.OpenFile(filepath.Join(c.Dir, "logs", "kubelet.log"), os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("restart kubelet: %v", err)
	}
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	go cmd.Wait() // reap it if it exits while we run
}

// podLogs reads the container's log as the runtime wrote it for kubelet (CRI format
// "<time> <stream> <tag> <line>"): the API server's log proxy needs node addresses this
// loopback node does not publish.
func podLogs(t *testing.T, pod *corev1.Pod) string {
	t.Helper()
	dir := filepath.Join("/var/log/pods", pod.Namespace+"_"+pod.Name+"_"+string(pod.UID), pod.Spec.Containers[0].Name)
	var out strings.Builder
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		out.Reset()
		files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
		for _, f := range files {
			b, _ := os.ReadFile(f)
			for _, line := range strings.Split(string(b), "\n") {
				if parts := strings.SplitN(line, " ", 4); len(parts) == 4 {
					out.WriteString(parts[3] + "\n")
				}
			}
		}
		if strings.Contains(out.String(), "END-OF-REPORT") {
			return out.String()
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("pod %s/%s: no complete log under %s: %q", pod.Namespace, pod.Name, dir, out.String())
	return ""
}

func envFromLogs(logs string) map[string]string {
	env := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = v
		}
	}
	return env
}

func TestDevicePluginOnRealKubelet(t *testing.T) {
	c := clustertest.Connect(t)
	work := t.TempDir()
	bin := buildTool(t, "./cmd/multinet-deviceplugin", work)
	importBusybox(t, c)

	tree := pcitest.New(t)
	tree.AddPF(pcitest.PF{Address: simPF, Vendor: "8086", Device: "1593", Driver: "ice", Netdev: "mnsim0", TotalVFs: 8, NUMANode: 0})
	for i := 0; i < 4; i++ {
		tree.AddVF(pcitest.VF{PF: simPF, Index: i, Address: simVF(i), Vendor: "8086", Device: "1889", Driver: "iavf", Netdev: fmt.Sprintf("mnsim0v%d", i)})
	}
	tree.SetOperState(simPF, "mnsim0", "up")

	// Unix socket paths stay short: the slot dir is under /tmp directly.
	vhostDir, err := os.MkdirTemp("", "mnvhu")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(vhostDir) })
	devinfoDir := filepath.Join(work, "devinfo")
	cfgPath := filepath.Join(work, "config.json")
	writeConfig(t, cfgPath, `{"resourceList":[
	  {"resourceName":"mn_e2e_vf","selectors":{"vendors":["8086"],"drivers":["iavf"],"pfNames":["mnsim0"]}},
	  {"resourceName":"mn_e2e_vhost","resourcePrefix":"multinet.io","deviceType":"vhostUser",
	   "vhostUser":{"dir":"`+vhostDir+`","count":2,"mode":"server","containerDir":"`+vhostCDir+`"}}]}`)

	p := startProcess(t, work, []string{devinfo.EnvBase + "=" + devinfoDir}, bin, "--config", cfgPath, "--sysfs-root", tree.Root,
		"--device-plugin-dir", c.DevicePluginDir(), "--pools-file", filepath.Join(c.Dir, "pools.json"))

	waitNodeRes(t, c, p, "registered", vfRes, 4, 4)
	waitNodeRes(t, c, p, "registered", vhostRes, 2, 2)
	if _, err := os.Stat(filepath.Join(c.DevicePluginDir(), "intel.com_mn_e2e_vf.sock")); err != nil {
		t.Errorf("plugin socket: %v", err)
	}

	// A pod asking for two VFs and a vhost-user slot gets them in its env and mounts.
	c.CreatePod(t, "default", "dp-user", func(pod *corev1.Pod) {
		ctr := &pod.Spec.Containers[0]
		ctr.Image = busybox
		ctr.Command = []string{"/bin/busybox", "sh", "-c",
			"/bin/busybox env; /bin/busybox ls -d " + vhostCDir + "/mn_e2e_vhost-* | /bin/busybox sed 's/^/SLOTDIR=/'; echo END-OF-REPORT; exec /bin/busybox sleep 3600"}
		ctr.Resources.Limits = corev1.ResourceList{vfRes: resource.MustParse("2"), vhostRes: resource.MustParse("1")}
	})
	pod := c.WaitRunning(t, "default", "dp-user", 90*time.Second)
	env := envFromLogs(podLogs(t, pod))
	got := strings.Split(env[vfEnv], ",")
	sort.Strings(got)
	if len(got) != 2 || !strings.HasPrefix(got[0], "0000:d8:02.") {
		t.Fatalf("container env %s = %q, want two VF addresses", vfEnv, env[vfEnv])
	}
	if !strings.Contains(env[vfEnv+"_INFO"], `"generic":{"deviceID":"`+got[0]+`"}`) {
		t.Errorf("container env %s_INFO = %s", vfEnv, env[vfEnv+"_INFO"])
	}
	slotSock := env[vhostEnv]
	if !strings.HasPrefix(slotSock, vhostCDir+"/mn_e2e_vhost-") || !strings.HasSuffix(slotSock, "/sock") {
		t.Errorf("container env %s = %q", vhostEnv, slotSock)
	}
	if want := filepath.Dir(slotSock); env["SLOTDIR"] != want {
		t.Errorf("slot directory in the container: %q, want %q mounted", env["SLOTDIR"], want)
	}
	for _, id := range got {
		di, err := devinfo.Load(filepath.Join(devinfoDir, "dp", "intel.com-mn_e2e_vf-"+id+"-device.json"))
		if err != nil || di == nil || di.Pci.PciAddress != id || di.Pci.PfPciAddress != simPF {
			t.Errorf("device-info of %s: %+v %v", id, di, err)
		}
	}

	// What the meta-plugin will ask: kubelet's answer and the checkpoint's agree with the env.
	ctx := context.Background()
	prc := podresources.Config{Socket: c.PodResourcesSocket(), Checkpoint: filepath.Join(c.DevicePluginDir(), "kubelet_internal_checkpoint")}
	ids, err := podresources.DeviceIDs(ctx, prc, "default", "dp-user", string(pod.UID), vfRes)
	if err != nil || !reflect.DeepEqual(ids, got) {
		t.Errorf("PodResources DeviceIDs = %v, %v; want %v", ids, err, got)
	}
	ids, err = podresources.FromCheckpoint(prc.Checkpoint, string(pod.UID), vfRes)
	if err != nil || !reflect.DeepEqual(ids, got) {
		t.Errorf("kubelet checkpoint DeviceIDs = %v, %v; want %v", ids, err, got)
	}
	ids, err = podresources.DeviceIDs(ctx, podresources.Config{Socket: filepath.Join(work, "no.sock"), Checkpoint: prc.Checkpoint}, "default", "dp-user", string(pod.UID), vfRes)
	if err != nil || !reflect.DeepEqual(ids, got) {
		t.Errorf("DeviceIDs with kubelet's API unreachable = %v, %v; want %v from the checkpoint", ids, err, got)
	}

	// A free VF loses its netdev: unhealthy, allocatable drops; back when it returns.
	free := ""
	for i := 0; i < 4; i++ {
		if !strings.Contains(env[vfEnv], simVF(i)) {
			free = simVF(i)
			break
		}
	}
	nd := fmt.Sprintf("mnsim0v%s", free[len(free)-1:])
	tree.RemoveNetdev(free, nd)
	waitNodeRes(t, c, p, "netdev "+nd+" removed", vfRes, 4, 3)
	tree.SetNetdevs(free, nd)
	waitNodeRes(t, c, p, "netdev back", vfRes, 4, 4)
	c.DeletePod(t, "default", "dp-user")

	// kubelet restarts: it wipes the plugin sockets; the plugin re-registers on its own.
	regs := p.count(`msg="registered with kubelet" resource=intel.com/mn_e2e_vf`)
	restartKubelet(t, c)
	start := time.Now()
	kubeletSock := filepath.Join(c.DevicePluginDir(), "kubelet.sock")
	var sockUp time.Time
	for time.Since(start) < 90*time.Second {
		if sockUp.IsZero() {
			if fi, err := os.Stat(kubeletSock); err == nil && fi.ModTime().After(start.Add(-time.Second)) {
				sockUp = time.Now()
			}
		}
		if p.count(`msg="registered with kubelet" resource=intel.com/mn_e2e_vf`) > regs {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if p.count(`msg="registered with kubelet" resource=intel.com/mn_e2e_vf`) <= regs {
		t.Fatalf("plugin did not re-register after the kubelet restart")
	}
	if !sockUp.IsZero() {
		t.Logf("re-registered %s after the new kubelet.sock appeared", time.Since(sockUp).Round(10*time.Millisecond))
	}
	if err := exec.Command(filepath.Join(c.Dir, "tools", "clusterctl"), "wait-node", filepath.Join(c.Dir, "kubeconfig"), clustertest.Node, "120s").Run(); err != nil {
		t.Fatalf("node not Ready after the kubelet restart: %v", err)
	}
	waitNodeRes(t, c, p, "after kubelet restart", vfRes, 4, 4)
	if p.cmd.ProcessState != nil {
		t.Fatalf("plugin exited")
	}

	// Config change without restarting the plugin: VF 3 moves to a new pool, the vhost-user
	// pool goes away and must not linger on the node.
	writeConfig(t, cfgPath, `{"resourceList":[
	  {"resourceName":"mn_e2e_vf","selectors":{"pfNames":["mnsim0#0-2"]}},
	  {"resourceName":"mn_e2e_vf2","selectors":{"pfNames":["mnsim0#3"]}}]}`)
	waitNodeRes(t, c, p, "config narrowed", vfRes, 3, 3)
	waitNodeRes(t, c, p, "config added a pool", vf2Res, 1, 1)
	waitNodeRes(t, c, p, "config removed a pool", vhostRes, 0, 0)
	if _, err := os.Stat(filepath.Join(c.DevicePluginDir(), "multinet.io_mn_e2e_vhost.sock")); !os.IsNotExist(err) {
		t.Errorf("removed pool's socket lingers: %v", err)
	}
	// A pod can no longer get the removed resource.
	c.CreatePod(t, "default", "dp-gone", func(pod *corev1.Pod) {
		pod.Spec.Containers[0].Resources.Limits = corev1.ResourceList{vhostRes: resource.MustParse("1")}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		gp, err := c.Kube.CoreV1().Pods("default").Get(ctx, "dp-gone", metav1.GetOptions{})
		if err == nil && gp.Status.Phase == corev1.PodFailed {
			t.Logf("pod asking for the removed resource: %s %s", gp.Status.Reason, gp.Status.Message)
			break
		}
		if err == nil && gp.Status.Phase == corev1.PodRunning {
			t.Fatalf("pod got the removed resource %s", vhostRes)
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod asking for the removed resource: phase %v, want Failed (admission)", gp.Status.Phase)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
