package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/multinet-io/multinet/agent"
	"github.com/multinet-io/multinet/cniinstall"
	"github.com/multinet-io/multinet/meta"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func readyz(addr string) int {
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// The agent as a DaemonSet starts it: installing the binaries and a thick conf. /readyz says
// not ready while the cluster network's conf is missing (no conf of ours either), ready once
// it is there and ours wraps it; a SIGTERM keeps the conf. With --serve-cni=false it installs
// the same way and serves no socket.
func TestAgentReadyAfterInstall(t *testing.T) {
	for _, serve := range []bool{true, false} {
		name := map[bool]string{true: "serve-cni", false: "no-cni-server"}[serve]
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			from, bin, confDir := filepath.Join(dir, "image", "bin"), filepath.Join(dir, "cni", "bin"), filepath.Join(dir, "net.d")
			for _, d := range []string{from, confDir} {
				os.MkdirAll(d, 0o755)
			}
			if err := os.WriteFile(filepath.Join(from, "multinet-shim"), []byte("#!/bin/sh\necho shim\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			sock, addr := filepath.Join(dir, "run", "multinet.sock"), freeAddr(t)
			a, err := agent.New(agent.Config{Socket: sock, MetricsAddr: addr, NoCNIServer: !serve,
				Install: &cniinstall.Config{From: from, BinDir: bin, ConfDir: confDir, Conf: meta.ModeThick, Interval: 20 * time.Millisecond},
				Log:     slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx) }()
			defer func() {
				cancel()
				<-done
			}()
			deadline := time.Now().Add(5 * time.Second)
			for {
				_, err := os.Stat(filepath.Join(bin, "multinet-shim"))
				if code := readyz(addr); code != 0 && err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("agent did not serve /readyz and install the shim")
				}
				time.Sleep(20 * time.Millisecond)
			}
			if _, err := os.Stat(sock); serve != (err == nil) {
				t.Errorf("socket %s: %v, want it served: %v", sock, err, serve)
			}
			time.Sleep(200 * time.Millisecond)
			if code := readyz(addr); code != http.StatusServiceUnavailable {
				t.Fatalf("/readyz = %d without the cluster network's conf, want 503", code)
			}
			own := filepath.Join(confDir, meta.OwnConfName)
			if _, err := os.Stat(own); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%s before the cluster network's conf: %v", own, err)
			}
			bridge := filepath.Join(confDir, "10-bridge.conflist")
			if err := os.WriteFile(bridge, []byte(`{"cniVersion": "1.0.0", "name": "cbr0", "plugins": [{"type": "bridge"}]}`), 0o644); err != nil {
				t.Fatal(err)
			}
			for readyz(addr) != http.StatusOK {
				if time.Now().After(deadline.Add(5 * time.Second)) {
					t.Fatal("/readyz not ready after the cluster network's conf appeared")
				}
				time.Sleep(20 * time.Millisecond)
			}
			var c struct {
				Plugins []map[string]interface{} `json:"plugins"`
			}
			b, err := os.ReadFile(own)
			if err != nil || json.Unmarshal(b, &c) != nil || len(c.Plugins) != 1 {
				t.Fatalf("conf %s: %v %s", own, err, b)
			}
			if p := c.Plugins[0]; p["type"] != "multinet-shim" || p["socket"] != sock || p["clusterNetwork"] != bridge || p["binDir"] != bin {
				t.Errorf("conf plugin = %v, want multinet-shim with the agent's socket, wrapping %s, binDir %s", p, bridge, bin)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			done <- nil
			if _, err := os.Stat(own); err != nil {
				t.Errorf("SIGTERM removed the conf: %v", err)
			}
		})
	}
}

// A start that fails (the socket served by another agent) returns its error instead of
// waiting for the installer, which runs until the agent stops.
func TestAgentStartErrorWithInstall(t *testing.T) {
	dir := t.TempDir()
	confDir := filepath.Join(dir, "net.d")
	os.MkdirAll(confDir, 0o755)
	sock := filepath.Join(dir, "run", "multinet.sock")
	cfg := agent.Config{Socket: sock, Install: &cniinstall.Config{ConfDir: confDir, Conf: meta.ModeThick, Interval: 20 * time.Millisecond},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	first, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- first.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for i := 0; ; i++ {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if i > 200 {
			t.Fatal("first agent does not serve")
		}
		time.Sleep(20 * time.Millisecond)
	}
	second, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- second.Run(context.Background()) }()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("second agent on a served socket: no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("second agent's failed start did not return")
	}
}

// multinetd as the DaemonSet runs it, flags only: it installs the built binaries and a thick
// conf naming its socket, is ready, and keeps everything on SIGTERM.
func TestMultinetdInstallFlags(t *testing.T) {
	dir := t.TempDir()
	cniBin, confDir, sock, addr := filepath.Join(dir, "opt-cni-bin"), filepath.Join(dir, "net.d"), filepath.Join(dir, "run", "m.sock"), freeAddr(t)
	os.MkdirAll(confDir, 0o755)
	bridge := filepath.Join(confDir, "10-bridge.conflist")
	if err := os.WriteFile(bridge, []byte(`{"cniVersion": "1.0.0", "name": "cbr0", "plugins": [{"type": "bridge"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, _ := os.Create(filepath.Join(dir, "multinetd.log"))
	defer logf.Close()
	cmd := exec.Command(filepath.Join(binDir, "multinetd"), "--no-api", "--socket", sock, "--metrics-addr", addr,
		"--install-from", binDir, "--cni-bin-dir", cniBin, "--cni-conf-dir", confDir, "--install-conf", "thick", "--install-interval", "50ms",
		"--pools-file", filepath.Join(dir, "pools.json"), "--sriov-state-dir", filepath.Join(dir, "state"), "--log-dir", filepath.Join(dir, "log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := false
	defer func() {
		if !exited {
			cmd.Process.Kill()
			cmd.Wait()
		}
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("multinetd log:\n%s", b)
		}
	}()
	deadline := time.Now().Add(15 * time.Second)
	for readyz(addr) != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("multinetd not ready")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, b := range []string{"multinetd", "multinet-shim", "multinet"} {
		if st, err := os.Stat(filepath.Join(cniBin, b)); err != nil || st.Mode().Perm() != 0o755 {
			t.Errorf("%s not installed 0755: %v", b, err)
		}
	}
	var c struct {
		Plugins []map[string]interface{} `json:"plugins"`
	}
	own := filepath.Join(confDir, meta.OwnConfName)
	b, err := os.ReadFile(own)
	if err != nil || json.Unmarshal(b, &c) != nil || len(c.Plugins) != 1 || c.Plugins[0]["socket"] != sock || c.Plugins[0]["clusterNetwork"] != bridge {
		t.Fatalf("conf %s: %v %s", own, err, b)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("multinetd on SIGTERM: %v", err)
	}
	exited = true
	if _, err := os.Stat(own); err != nil {
		t.Errorf("SIGTERM removed the conf: %v", err)
	}
}
