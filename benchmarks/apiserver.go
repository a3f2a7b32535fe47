package benchmarks

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	nadclient "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/clientset/versioned"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

// APIServer is etcd + kube-apiserver on loopback, as the e2e cluster runs them, with one admin
// token. It runs in the benchmark's private network namespace, so its fixed ports collide with
// nothing on the machine.
type APIServer struct {
	Kubeconfig string
	Dir        string // certificates (serving.crt), tokens, etcd data
	Kube       kubernetes.Interface
	NADs       nadclient.Interface

	procs []*exec.Cmd
	names []string
	done  []chan struct{}
	// launch starts processes from one OS thread that lives as long as the daemons: Pdeathsig
	// fires when the forking *thread* exits, and Go ends threads that netns work locked.
	launch chan *exec.Cmd
	errs   chan error
	// PeakRSSKB is each daemon's peak RSS, known after Stop.
	PeakRSSKB map[string]int64
}

const apiPort = 6443

// adminToken is the API server's one (static) token: system:masters.
const adminToken = "bench-admin"

// StartAPIServer starts etcd and kube-apiserver from binDir (e2e/cluster/build-tools.sh's
// cache), waits until the API answers and installs the CRDs of crdDir.
func StartAPIServer(binDir, dir, crdDir string, logw *os.File) (*APIServer, error) {
	a := &APIServer{Dir: dir, PeakRSSKB: map[string]int64{}, launch: make(chan *exec.Cmd), errs: make(chan error)}
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine, in Stop
		for cmd := range a.launch {
			a.errs <- cmd.Start()
		}
	}()
	if err := writeCerts(dir); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "tokens.csv"), []byte(adminToken+",admin,admin,system:masters\n"), 0o600); err != nil {
		return nil, err
	}
	if err := a.start(logw, "etcd", filepath.Join(binDir, "etcd"), "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "default=http://127.0.0.1:2380"); err != nil {
		return nil, err
	}
	if err := a.start(logw, "kube-apiserver", filepath.Join(binDir, "kube-apiserver"), "--etcd-servers=http://127.0.0.1:2379",
		fmt.Sprintf("--secure-port=%d", apiPort), "--bind-address=127.0.0.1",
		"--tls-cert-file="+filepath.Join(dir, "serving.crt"), "--tls-private-key-file="+filepath.Join(dir, "serving.key"),
		"--service-account-key-file="+filepath.Join(dir, "sa.pub"), "--service-account-signing-key-file="+filepath.Join(dir, "sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc", "--token-auth-file="+filepath.Join(dir, "tokens.csv"),
		"--authorization-mode=RBAC", "--advertise-address=127.0.0.1", "--service-cluster-ip-range=10.96.0.0/24"); err != nil {
		a.Stop()
		return nil, err
	}
	a.Kubeconfig = filepath.Join(dir, "kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: bench, cluster: {server: "https://127.0.0.1:%d", insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: %s}}]
contexts: [{name: bench, context: {cluster: bench, user: admin}}]
current-context: bench
`, apiPort, adminToken)
	if err := os.WriteFile(a.Kubeconfig, []byte(kc), 0o600); err != nil {
		a.Stop()
		return nil, err
	}
	if err := a.connect(crdDir); err != nil {
		a.Stop()
		return nil, err
	}
	return a, nil
}

func (a *APIServer) start(logw *os.File, name, bin string, args ...string) error {
	return a.startEnv(logw, name, bin, nil, args...)
}

// startEnv starts a long-running process with extra environment; Alive watches it and Stop
// ends it (the last started first).
func (a *APIServer) startEnv(logw *os.File, name, bin string, env []string, args ...string) error {
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logw, logw
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	// Die with the benchmark even if it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	a.launch <- cmd
	if err := <-a.errs; err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	a.procs, a.names, a.done = append(a.procs, cmd), append(a.names, name), append(a.done, done)
	return nil
}

func (a *APIServer) connect(crdDir string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", a.Kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 1000, 1000
	if a.Kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	if a.NADs, err = nadclient.NewForConfig(cfg); err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		_, err = a.Kube.CoreV1().Namespaces().Get(context.Background(), "default", metav1.GetOptions{})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-apiserver not ready after 90s: %w", err)
		}
		if err := a.Alive(); err != nil {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
	files, _ := filepath.Glob(filepath.Join(crdDir, "*.yaml"))
	crds := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		j, err := yaml.YAMLToJSON(b)
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(j); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if _, err := dyn.Resource(crds).Create(context.Background(), u, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create CRD from %s: %w", f, err)
		}
	}
	for {
		_, err = a.NADs.K8sCniCncfIoV1().NetworkAttachmentDefinitions("default").List(context.Background(), metav1.ListOptions{})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("NAD CRD not served after 90s: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Alive fails when a daemon has exited: every number after that would be an error path.
func (a *APIServer) Alive() error {
	for i, d := range a.done {
		select {
		case <-d:
			return fmt.Errorf("%s exited: %v", a.names[i], a.procs[i].ProcessState)
		default:
		}
	}
	return nil
}

// Stop ends the daemons (apiserver first) and records their peak RSS.
func (a *APIServer) Stop() {
	for i := len(a.procs) - 1; i >= 0; i-- {
		p := a.procs[i]
		p.Process.Signal(syscall.SIGTERM)
		done := a.done[i]
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			p.Process.Kill()
			<-done
		}
		if ru, ok := p.ProcessState.SysUsage().(*syscall.Rusage); ok {
			a.PeakRSSKB[a.names[i]] = ru.Maxrss
		}
	}
	a.procs = nil
	if a.launch != nil {
		close(a.launch)
		a.launch = nil
	}
}

// writeCerts makes the serving certificate and the service-account key pair.
func writeCerts(dir string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	sa, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		return err
	}
	files := map[string]*pem.Block{
		"serving.crt": {Type: "CERTIFICATE", Bytes: der},
		"serving.key": {Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)},
		"sa.key":      {Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(sa)},
		"sa.pub":      {Type: "PUBLIC KEY", Bytes: pub},
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(b), 0o600); err != nil {
			return err
		}
	}
	return nil
}
