package cniinstall_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/multinet-io/multinet/cniinstall"
	"github.com/multinet-io/multinet/meta"
)

const bridgeConf = `{"cniVersion": "1.0.0", "name": "cbr0", "plugins": [
  {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "subnet": "10.244.0.0/24"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}`

// syncBuffer is a log sink the installer's goroutine writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// running starts the installer; stop cancels it (a SIGTERM) and waits for its end.
func running(t *testing.T, cfg cniinstall.Config) (in *cniinstall.Installer, stop func()) {
	t.Helper()
	if cfg.Interval == 0 {
		cfg.Interval = 20 * time.Millisecond
	}
	if cfg.Log == nil {
		cfg.Log = quiet()
	}
	in, err := cniinstall.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); in.Run(ctx) }()
	var stopped bool
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return in, stop
}

type ownConf struct {
	CNIVersion string `json:"cniVersion"`
	Plugins    []struct {
		Type           string          `json:"type"`
		ClusterNetwork string          `json:"clusterNetwork"`
		Capabilities   map[string]bool `json:"capabilities"`
		Socket         string          `json:"socket"`
		Kubeconfig     string          `json:"kubeconfig"`
	} `json:"plugins"`
}

func readConf(t *testing.T, path string) (ownConf, bool) {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return ownConf{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	var c ownConf
	if err := json.Unmarshal(b, &c); err != nil || len(c.Plugins) != 1 {
		t.Fatalf("%s: %v: %s", path, err, b)
	}
	return c, true
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The conf is written only once the cluster network's conf is there, wraps that one (never a
// leftover of ours or a Multus conf), and follows it: a changed capability, a new conf that
// sorts first.
func TestConfFollowsClusterNetwork(t *testing.T) {
	dir := t.TempDir()
	confDir := filepath.Join(dir, "net.d")
	sock := filepath.Join(dir, "run", "agent.sock")
	// Leftovers: a thin conf of an earlier install under another name, and Multus's.
	leftover := `{"cniVersion": "1.0.0", "name": "multinet-cni-network", "plugins": [{"type": "multinet", "clusterNetwork": "/etc/cni/net.d/10-gone.conflist"}]}`
	write(t, filepath.Join(confDir, "00-multinet-old.conflist"), leftover)
	write(t, filepath.Join(confDir, "00-multus.conf"), `{"cniVersion": "0.3.1", "name": "multus-cni-network", "type": "multus-shim"}`)
	write(t, filepath.Join(confDir, "10-bridge.conflist.bak"), bridgeConf)
	var logs syncBuffer
	in, _ := running(t, cniinstall.Config{ConfDir: confDir, Conf: meta.ModeThick, Socket: sock, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	own := in.ConfPath()
	time.Sleep(200 * time.Millisecond) // ten looks at the dir
	if _, ok := readConf(t, own); ok {
		t.Fatalf("%s written before the cluster network's conf exists", own)
	}
	if in.Ready() {
		t.Fatal("ready without a conf")
	}

	bridge := filepath.Join(confDir, "10-bridge.conflist")
	write(t, bridge, bridgeConf)
	waitFor(t, "the conf", func() bool { _, ok := readConf(t, own); return ok && in.Ready() })
	c, _ := readConf(t, own)
	p := c.Plugins[0]
	if p.Type != "multinet-shim" || p.ClusterNetwork != bridge || p.Socket != sock || !p.Capabilities["portMappings"] || c.CNIVersion != "1.0.0" {
		t.Fatalf("conf = %+v, want multinet-shim wrapping %s with socket %s and portMappings", c, bridge, sock)
	}

	// The cluster network gains a capability: the conf follows.
	write(t, bridge, strings.Replace(bridgeConf, `"portMappings": true`, `"portMappings": true, "bandwidth": true`, 1))
	waitFor(t, "bandwidth in the conf", func() bool { c, _ := readConf(t, own); return c.Plugins[0].Capabilities["bandwidth"] })

	// Another cluster network that sorts first takes over (the runtime would have used it).
	calico := filepath.Join(confDir, "05-calico.conflist")
	write(t, calico, `{"cniVersion": "0.4.0", "name": "k8s-pod-network", "plugins": [{"type": "calico"}]}`)
	waitFor(t, "the conf to wrap calico", func() bool { c, _ := readConf(t, own); return c.Plugins[0].ClusterNetwork == calico })
	if c, _ := readConf(t, own); c.CNIVersion != "0.4.0" || c.Plugins[0].Capabilities["bandwidth"] {
		t.Errorf("conf after the switch = %+v: want calico's cniVersion and none of bridge's capabilities", c)
	}
	// The leftover sorts before ours ('-' < '.'): the runtime would use it; the log says so.
	if l := logs.String(); !strings.Contains(l, "a conf sorts before ours") || !strings.Contains(l, "00-multinet-old.conflist") {
		t.Errorf("no warning about the leftover the runtime uses:\n%s", l)
	}
	// Removed by hand (or a node cleanup script) while the agent runs: written again.
	if err := os.Remove(own); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the conf written again", func() bool { _, ok := readConf(t, own); return ok })
	if b, _ := os.ReadFile(filepath.Join(confDir, "00-multinet-old.conflist")); string(b) != leftover {
		t.Errorf("leftover conf changed: %s", b)
	}
}

// An upgrade installs over a plugin that is running: a plain copy over it fails with "text
// file busy"; the install succeeds, the running plugin keeps running, the next exec gets the
// new file. Identical files are not rewritten; non-executables are not installed.
func TestInstallOverRunningBinary(t *testing.T) {
	dir := t.TempDir()
	from, to := filepath.Join(dir, "image-bin"), filepath.Join(dir, "cni-bin")
	os.MkdirAll(from, 0o755)
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	orig, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(from, "plugin"), orig, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(from, "README"), "not a binary")
	written, err := cniinstall.InstallBinaries(from, to)
	if err != nil || strings.Join(written, ",") != "plugin" {
		t.Fatalf("first install: %v, %v; want [plugin]", written, err)
	}
	if _, err := os.Stat(filepath.Join(to, "README")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a non-executable was installed: %v", err)
	}
	dst := filepath.Join(to, "plugin")
	run := exec.Command(dst, "60")
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { run.Process.Kill(); run.Wait() }()
	// What a plain copy does: open the running file for writing.
	if f, err := os.OpenFile(dst, os.O_WRONLY|os.O_TRUNC, 0); !errors.Is(err, syscall.ETXTBSY) {
		if err == nil {
			f.Close()
		}
		t.Fatalf("open of a running binary for writing: %v, want text file busy (the case this test is about)", err)
	}

	// A new version: the same program with a marker appended (an ELF runs with trailing bytes).
	next := append(append([]byte{}, orig...), []byte("multinet-v2")...)
	if err := os.WriteFile(filepath.Join(from, "plugin"), next, 0o755); err != nil {
		t.Fatal(err)
	}
	written, err = cniinstall.InstallBinaries(from, to)
	if err != nil || len(written) != 1 {
		t.Fatalf("install over the running plugin: %v, %v", written, err)
	}
	if got, _ := os.ReadFile(dst); string(got) != string(next) {
		t.Error("installed file is not the new version")
	}
	if st, _ := os.Stat(dst); st.Mode().Perm() != 0o755 {
		t.Errorf("installed mode %o, want 0755", st.Mode().Perm())
	}
	if err := run.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the running plugin died: %v", err)
	}
	if out, err := exec.Command(dst, "0").CombinedOutput(); err != nil {
		t.Errorf("exec of the new version: %v %s", err, out)
	}
	if written, err := cniinstall.InstallBinaries(from, to); err != nil || len(written) != 0 {
		t.Errorf("re-install of identical files wrote %v (%v), want nothing", written, err)
	}
	entries, _ := os.ReadDir(to)
	if len(entries) != 1 {
		t.Errorf("bin dir holds %d entries, want only the plugin (no temp files)", len(entries))
	}
}

// serviceAccount is a pod's projected service-account volume: files behind kubelet's
// ..data symlink, which a rotation swaps.
type serviceAccount struct {
	t   *testing.T
	dir string
	n   int
}

func newServiceAccount(t *testing.T, token string) *serviceAccount {
	sa := &serviceAccount{t: t, dir: filepath.Join(t.TempDir(), "sa")}
	os.MkdirAll(sa.dir, 0o755)
	sa.rotate(token)
	for _, f := range []string{"token", "ca.crt"} {
		if err := os.Symlink(filepath.Join("..data", f), filepath.Join(sa.dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	return sa
}

func (sa *serviceAccount) rotate(token string) {
	sa.n++
	ts := filepath.Join(sa.dir, "..ts"+string(rune('0'+sa.n)))
	write(sa.t, filepath.Join(ts, "token"), token)
	write(sa.t, filepath.Join(ts, "ca.crt"), "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	tmp := filepath.Join(sa.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		sa.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(sa.dir, "..data")); err != nil {
		sa.t.Fatal(err)
	}
}

// Thin mode: the plugin's kubeconfig from the pod's service account (0600, server, CA and
// token embedded: the plugin runs on the host), named by the conf, rewritten when the
// projected token rotates.
func TestThinKubeconfigFollowsToken(t *testing.T) {
	confDir := filepath.Join(t.TempDir(), "net.d")
	write(t, filepath.Join(confDir, "10-bridge.conflist"), bridgeConf)
	sa := newServiceAccount(t, "token-one\n")
	in, _ := running(t, cniinstall.Config{ConfDir: confDir, Conf: meta.ModeThin, ServiceAccountDir: sa.dir,
		APIServer: cniinstall.APIServerURL("fd00::1", "6443")})
	kc := filepath.Join(confDir, "multinet.d", "multinet.kubeconfig")
	waitFor(t, "the conf", func() bool { _, ok := readConf(t, in.ConfPath()); return ok && in.Ready() })
	c, _ := readConf(t, in.ConfPath())
	if c.Plugins[0].Type != "multinet" || c.Plugins[0].Kubeconfig != kc {
		t.Fatalf("conf = %+v, want type multinet with kubeconfig %s", c, kc)
	}
	token := func() string {
		cfg, err := clientcmd.LoadFromFile(kc)
		if err != nil {
			t.Fatal(err)
		}
		ctx := cfg.Contexts[cfg.CurrentContext]
		cl := cfg.Clusters[ctx.Cluster]
		if cl.Server != "https://[fd00::1]:6443" || !strings.Contains(string(cl.CertificateAuthorityData), "MIIB") {
			t.Fatalf("kubeconfig cluster = %+v", cl)
		}
		return cfg.AuthInfos[ctx.AuthInfo].Token
	}
	if got := token(); got != "token-one" {
		t.Fatalf("token = %q, want token-one", got)
	}
	if st, _ := os.Stat(kc); st.Mode().Perm() != 0o600 {
		t.Errorf("kubeconfig mode %o, want 0600 (it holds a token)", st.Mode().Perm())
	}
	sa.rotate("token-two")
	waitFor(t, "the rotated token", func() bool { return token() == "token-two" })
}

// agentPod is this agent's pod, run by DaemonSet kube-system/multinet, in a fake API.
func agentPod(ds bool) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "multinet-x7k2p", Namespace: "kube-system"}}
	if ds {
		yes := true
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: "multinet", UID: "ds-uid", Controller: &yes}}
	}
	return p
}

func daemonSet(deleting bool) *appsv1.DaemonSet {
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "multinet", Namespace: "kube-system", UID: "ds-uid"}}
	if deleting {
		now := metav1.Now()
		ds.DeletionTimestamp = &now
		ds.Finalizers = []string{"foregroundDeletion"}
	}
	return ds
}

// A stop removes the conf and the thin kubeconfig only on an uninstall: the pod's DaemonSet
// deleted or being deleted. A plain SIGTERM (restart, rolling update), a pod without a
// DaemonSet, or no pod identity keep them.
func TestUninstallOnlyWhenDaemonSetGone(t *testing.T) {
	cases := []struct {
		name     string
		identity bool
		pod      *corev1.Pod
		ds       *appsv1.DaemonSet
		setup    func(*fake.Clientset) // before start
		before   func(*fake.Clientset) // between start and stop
		removed  bool
	}{
		{name: "restart: DaemonSet exists", identity: true, pod: agentPod(true), ds: daemonSet(false)},
		{name: "no pod identity", pod: agentPod(true)},
		{name: "pod without DaemonSet", identity: true, pod: agentPod(false)},
		{name: "DaemonSet deleted", identity: true, pod: agentPod(true), ds: daemonSet(false), removed: true,
			before: func(c *fake.Clientset) {
				c.AppsV1().DaemonSets("kube-system").Delete(context.Background(), "multinet", metav1.DeleteOptions{})
			}},
		// kubectl delete -k deletes the service account and RBAC with the DaemonSet: by the
		// pod's SIGTERM the API may refuse its token or its reads.
		{name: "service account deleted (401)", identity: true, pod: agentPod(true), ds: daemonSet(false), removed: true,
			before: func(c *fake.Clientset) {
				c.PrependReactor("get", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, apierrors.NewUnauthorized("invalid bearer token")
				})
			}},
		{name: "RBAC deleted (403)", identity: true, pod: agentPod(true), ds: daemonSet(false), removed: true,
			before: func(c *fake.Clientset) {
				c.PrependReactor("get", "daemonsets", func(a k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "daemonsets"}, "multinet", errors.New("RBAC"))
				})
			}},
		{name: "never allowed to read its DaemonSet", identity: true, pod: agentPod(true), ds: daemonSet(false),
			setup: func(c *fake.Clientset) {
				c.PrependReactor("get", "daemonsets", func(a k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "daemonsets"}, "multinet", errors.New("RBAC"))
				})
			}},
		{name: "DaemonSet being deleted (foreground)", identity: true, pod: agentPod(true), ds: daemonSet(true), removed: true},
		{name: "pod and DaemonSet gone from the API", identity: true, pod: agentPod(true), ds: daemonSet(false), removed: true,
			before: func(c *fake.Clientset) {
				c.CoreV1().Pods("kube-system").Delete(context.Background(), "multinet-x7k2p", metav1.DeleteOptions{})
				c.AppsV1().DaemonSets("kube-system").Delete(context.Background(), "multinet", metav1.DeleteOptions{})
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			confDir := filepath.Join(t.TempDir(), "net.d")
			bridge := filepath.Join(confDir, "10-bridge.conflist")
			write(t, bridge, bridgeConf)
			objs := []runtime.Object{tc.pod}
			if tc.ds != nil {
				objs = append(objs, tc.ds)
			}
			kube := fake.NewClientset(objs...)
			if tc.setup != nil {
				tc.setup(kube)
			}
			cfg := cniinstall.Config{ConfDir: confDir, Conf: meta.ModeThin, ServiceAccountDir: newServiceAccount(t, "t").dir,
				APIServer: "https://10.96.0.1:443", Kube: kube, UninstallTimeout: 300 * time.Millisecond}
			if tc.identity {
				cfg.PodNamespace, cfg.PodName = "kube-system", "multinet-x7k2p"
			}
			in, stop := running(t, cfg)
			kc := filepath.Join(confDir, "multinet.d", "multinet.kubeconfig")
			waitFor(t, "the conf", in.Ready)
			if tc.before != nil {
				tc.before(kube)
			}
			stop()
			_, confErr := os.Stat(in.ConfPath())
			_, kcErr := os.Stat(kc)
			if tc.removed {
				if !errors.Is(confErr, os.ErrNotExist) || !errors.Is(kcErr, os.ErrNotExist) {
					t.Errorf("uninstall left conf (%v) or kubeconfig (%v)", confErr, kcErr)
				}
				if entries, _ := os.ReadDir(confDir); len(entries) != 1 {
					t.Errorf("conf dir after uninstall holds %d entries, want only the cluster network's", len(entries))
				}
				if _, err := os.Stat(bridge); err != nil {
					t.Errorf("the cluster network's conf: %v", err)
				}
			} else if confErr != nil || kcErr != nil {
				t.Errorf("a stop that is no uninstall removed conf (%v) or kubeconfig (%v)", confErr, kcErr)
			}
		})
	}
}

// A thick conf waits for the agent to serve (ConfAfter): written before, the first pods'
// shims would wait for an agent still syncing its caches. The binaries do not wait.
func TestThickConfWaitsForAgent(t *testing.T) {
	dir := t.TempDir()
	from, bin, confDir := filepath.Join(dir, "image"), filepath.Join(dir, "bin"), filepath.Join(dir, "net.d")
	write(t, filepath.Join(confDir, "10-bridge.conflist"), bridgeConf)
	write(t, filepath.Join(from, "multinet-shim"), "#!/bin/sh\n")
	os.Chmod(filepath.Join(from, "multinet-shim"), 0o755)
	serving := make(chan struct{})
	in, _ := running(t, cniinstall.Config{From: from, BinDir: bin, ConfDir: confDir, Conf: meta.ModeThick, ConfAfter: serving})
	waitFor(t, "the shim installed", func() bool { _, err := os.Stat(filepath.Join(bin, "multinet-shim")); return err == nil })
	time.Sleep(100 * time.Millisecond)
	if _, ok := readConf(t, in.ConfPath()); ok || in.Ready() {
		t.Fatal("thick conf written (or ready) before the agent serves")
	}
	close(serving)
	waitFor(t, "the conf", func() bool { _, ok := readConf(t, in.ConfPath()); return ok && in.Ready() })
}
