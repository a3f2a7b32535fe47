package deviceplugin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	dp "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// KubeletSocket is the registration socket's name in the device-plugin directory.
const KubeletSocket = "kubelet.sock"

// DefaultPluginDir is where kubelet looks for device plugins.
const DefaultPluginDir = "/var/lib/kubelet/device-plugins"

// endpoint serves one pool on a unix socket. kubelet deletes every socket in its directory when
// it starts, so an endpoint is replaced (never reused) when its socket vanishes.
type endpoint struct {
	pool   *pool
	path   string
	ino    uint64
	srv    *grpc.Server
	served chan struct{}
	// kubelet is the identity of the kubelet.sock we registered with, "" while unregistered.
	kubelet string
}

func startEndpoint(p *pool, dir string) (*endpoint, error) {
	cfg := p.config()
	path := filepath.Join(dir, cfg.SocketName())
	// A socket left by an earlier run of ours would make Listen fail.
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("endpoint %s: remove stale socket: %w", cfg.FullName(), err)
	}
	l, err := listenPrivate(path)
	if err != nil {
		return nil, fmt.Errorf("endpoint %s: %w", cfg.FullName(), err)
	}
	e := &endpoint{pool: p, path: path, ino: inode(path), srv: grpc.NewServer(), served: make(chan struct{})}
	dp.RegisterDevicePluginServer(e.srv, p)
	go func() {
		defer close(e.served)
		if err := e.srv.Serve(l); err != nil {
			p.log.Error("endpoint stopped", "socket", path, "err", err)
		}
	}()
	return e, nil
}

// alive reports whether our socket file is still the one we listen on.
func (e *endpoint) alive() bool {
	return e.ino != 0 && inode(e.path) == e.ino
}

// stop closes the server and removes the socket if it is still ours (kubelet may have removed
// it and a new endpoint may already sit at the same path).
func (e *endpoint) stop() {
	e.srv.Stop()
	<-e.served
	if e.alive() {
		_ = os.Remove(e.path)
	}
}

func inode(path string) uint64 {
	fi, err := os.Lstat(path)
	if err != nil {
		return 0
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// kubeletID identifies the kubelet.sock currently in dir ("" when there is none): a restarted
// kubelet recreates it, so its inode changes.
func kubeletID(dir string) string {
	fi, err := os.Lstat(filepath.Join(dir, KubeletSocket))
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		return ""
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fi.ModTime().String()
	}
	return fmt.Sprintf("%d/%d.%d", st.Ino, st.Ctim.Sec, st.Ctim.Nsec)
}

// register announces the endpoint to kubelet; kubelet then dials back and opens ListAndWatch.
func (e *endpoint) register(ctx context.Context, dir string) error {
	cfg := e.pool.config()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, KubeletSocket), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("register %s: %w", cfg.FullName(), err)
	}
	defer conn.Close()
	_, err = dp.NewRegistrationClient(conn).Register(ctx, &dp.RegisterRequest{
		Version:      dp.Version,
		Endpoint:     filepath.Base(e.path),
		ResourceName: cfg.FullName(),
		Options:      &dp.DevicePluginOptions{GetPreferredAllocationAvailable: true},
	})
	if err != nil {
		return fmt.Errorf("register %s with kubelet at %s: %w", cfg.FullName(), dir, err)
	}
	return nil
}

// listenPrivate listens on a unix socket at path that only root can connect to (0600), whatever
// the process umask: the socket is made in a private directory next to path, chmodded there,
// and only then renamed into place, so nobody can connect while it is still open to all.
func listenPrivate(path string) (net.Listener, error) {
	tmpDir, err := os.MkdirTemp(filepath.Dir(path), ".mn-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	l, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, err
	}
	// The listener must not remove the socket at its temporary path when closed: it lives at
	// path from now on, and stop removes it there.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}
