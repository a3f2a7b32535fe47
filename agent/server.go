package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"

	"github.com/multinet-io/multinet/internal/cniargs"
	"github.com/multinet-io/multinet/internal/cniwire"
	"github.com/multinet-io/multinet/meta"
	"github.com/multinet-io/multinet/meta/delcache"
)

// keyedMutex serializes the calls for one container (a runtime's DEL racing its own ADD's
// retry must not interleave delegates); calls for different containers run in parallel.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyLock
}

type keyLock struct {
	ch chan struct{} // holds one token while the key is locked
	n  int           // holders and waiters: the entry goes when it drops to 0
}

func (k *keyedMutex) lock(ctx context.Context, key string) error {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyLock{}
	}
	l := k.m[key]
	if l == nil {
		l = &keyLock{ch: make(chan struct{}, 1)}
		k.m[key] = l
	}
	l.n++
	k.mu.Unlock()
	select {
	case l.ch <- struct{}{}:
		return nil
	case <-ctx.Done():
		k.release(key, l)
		return ctx.Err()
	}
}

func (k *keyedMutex) unlock(key string) {
	k.mu.Lock()
	l := k.m[key]
	k.mu.Unlock()
	<-l.ch
	k.release(key, l)
}

func (k *keyedMutex) release(key string, l *keyLock) {
	k.mu.Lock()
	if l.n--; l.n == 0 {
		delete(k.m, key)
	}
	k.mu.Unlock()
}

// serveConn reads one request, answers it and closes the connection.
func (a *Agent) serveConn(ctx context.Context, conn *net.UnixConn) {
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(io.LimitReader(conn, cniwire.MaxRequest+1))
	if err == nil && len(b) == 0 {
		return // a probe (a health check dialing the socket): no request, no answer
	}
	var resp *cniwire.Response
	var req cniwire.Request
	switch {
	case err != nil:
		resp = errResponse(fmt.Errorf("multinetd: read request: %w", err))
	case len(b) > cniwire.MaxRequest:
		resp = errResponse(fmt.Errorf("multinetd: request larger than %d bytes", cniwire.MaxRequest))
	default:
		if err := json.Unmarshal(b, &req); err != nil {
			resp = errResponse(fmt.Errorf("multinetd: request: %w", err))
		} else {
			rctx, cancel := context.WithCancel(ctx)
			stop := watchHangup(conn, func() {
				a.log.Warn("the shim hung up: cancelling its call (what it did is undone)", "command", req.Env["CNI_COMMAND"], "container", req.Env["CNI_CONTAINERID"])
				cancel()
			})
			resp = a.serve(rctx, &req)
			stop()
			cancel()
		}
	}
	_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := json.NewEncoder(conn).Encode(resp); err != nil {
		a.log.Error("answer lost: the shim hung up", "command", req.Env["CNI_COMMAND"], "container", req.Env["CNI_CONTAINERID"], "err", err)
	}
}

// watchHangup calls hungUp once when the shim closes its end of conn (it was killed, or the
// runtime gave up on it and the call has nobody left to answer), until stop is called. The
// shim half-closes after its request, so a read says EOF at once whether it is there or not:
// only POLLHUP (both directions shut) says it is gone. stop wakes the poll in progress (an
// eventfd in its set) instead of waiting out its round: the answer, and the close that ends
// it for the shim, would wait for the round (up to hangupPollMS on every call).
func watchHangup(conn *net.UnixConn, hungUp func()) (stop func()) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return func() {}
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return func() {}
	}
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		for {
			gone, woken := false, false
			// Control holds the fd for the poll: Close waits, the number is never reused under us.
			cerr := rc.Control(func(fd uintptr) {
				// POLLHUP and POLLERR are always reported.
				fds := []unix.PollFd{{Fd: int32(fd)}, {Fd: int32(wake), Events: unix.POLLIN}}
				if n, err := unix.Poll(fds, hangupPollMS); err == nil && n > 0 {
					woken = fds[1].Revents != 0
					gone = fds[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0
				}
			})
			if cerr != nil || woken {
				return
			}
			if gone {
				hungUp()
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			unix.Write(wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
			<-exited
			unix.Close(wake)
		})
	}
}

// hangupPollMS is watchHangup's poll round.
var hangupPollMS = 100

func errResponse(err error) *cniwire.Response {
	te, _ := asCNIError(err).(*types.Error)
	return &cniwire.Response{Error: te}
}

// serve runs one CNI call: its container's turn, then a free worker, then meta.Plugin.
func (a *Agent) serve(ctx context.Context, req *cniwire.Request) (resp *cniwire.Response) {
	start := time.Now()
	env := req.Env
	cmd := env["CNI_COMMAND"]
	args := &skel.CmdArgs{ContainerID: env["CNI_CONTAINERID"], Netns: env["CNI_NETNS"], IfName: env["CNI_IFNAME"],
		Args: env["CNI_ARGS"], Path: env["CNI_PATH"], StdinData: req.Stdin}
	log := a.log.With("command", cmd, "container", args.ContainerID, "ifname", args.IfName, "pod", cniargs.Pod(args.Args))
	defer func() {
		result := "ok"
		if resp.Error != nil {
			result = "error"
			log.Error("CNI request failed", "ms", time.Since(start).Milliseconds(), "err", resp.Error.Msg)
		} else {
			log.Info("CNI request done", "ms", time.Since(start).Milliseconds())
		}
		a.metrics.requests.WithLabelValues(cmd, result).Inc()
		a.metrics.duration.WithLabelValues(cmd).Observe(time.Since(start).Seconds())
	}()
	switch cmd {
	case "ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION":
	default:
		return errResponse(&types.Error{Code: types.ErrInvalidEnvironmentVariables, Msg: fmt.Sprintf("multinetd: CNI_COMMAND %q: want ADD, DEL, CHECK, STATUS, GC or VERSION", cmd)})
	}

	a.metrics.queued.Inc()
	queued := true
	defer func() {
		if queued {
			a.metrics.queued.Dec()
		}
	}()
	// GC deletes what is not in the runtime's list: an ADD running meanwhile (not in the list
	// yet) must not be one of those, so GC runs alone.
	if cmd == "GC" {
		a.gc.Lock()
		defer a.gc.Unlock()
	} else {
		a.gc.RLock()
		defer a.gc.RUnlock()
	}
	if args.ContainerID != "" {
		if err := a.containers.lock(ctx, args.ContainerID); err != nil {
			return errResponse(fmt.Errorf("multinetd: container %s: waiting for its previous call: %w", args.ContainerID, err))
		}
		defer a.containers.unlock(args.ContainerID)
	}
	select {
	case a.workers <- struct{}{}:
		defer func() { <-a.workers }()
	case <-ctx.Done():
		return errResponse(fmt.Errorf("multinetd: shutting down before a worker was free: %w", ctx.Err()))
	}
	a.metrics.queued.Dec()
	queued = false
	a.metrics.inFlight.Inc()
	defer a.metrics.inFlight.Dec()

	defer func() {
		// No input may take the agent, and with it every pod's networking, down.
		if r := recover(); r != nil {
			log.Error("panic", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			resp = errResponse(fmt.Errorf("multinetd: %s container %s: internal error: %v", cmd, args.ContainerID, r))
		}
	}()
	return a.run(ctx, cmd, args, env)
}

func (a *Agent) run(ctx context.Context, cmd string, args *skel.CmdArgs, env map[string]string) *cniwire.Response {
	if cmd == "VERSION" {
		var buf bytes.Buffer
		if err := meta.Versions.Encode(&buf); err != nil {
			return errResponse(err)
		}
		return &cniwire.Response{Result: buf.Bytes()}
	}
	depth := delcache.ParseDepth(env[meta.EnvDepth])
	sh := meta.Shared{Exec: a.exec, Sys: a.sys, HostViews: a.hostViews, DevInfo: a.cfg.DevInfo, Log: a.log, Timeout: a.cfg.RequestTimeout, Depth: depth}
	if a.nets != nil {
		sh.Nets = a.nets
	}
	p, err := meta.NewShared(args.StdinData, args.Args, sh)
	if err != nil {
		return errResponse(&types.Error{Code: types.ErrDecodingFailure, Msg: err.Error()})
	}
	if a.nets == nil && p.Conf.Kubeconfig != "" && p.Conf.NetworkDir == "" && cmd != "DEL" {
		// Serving it would attach the cluster network only, silently dropping every NAD.
		return errResponse(&types.Error{Code: types.ErrPluginNotAvailable,
			Msg: fmt.Sprintf("multinetd: the conf %q is in API mode (kubeconfig) but the agent runs without an API client (--no-api)", p.Conf.Name)})
	}
	switch cmd {
	case "ADD":
		res, err := p.AddContext(ctx, args)
		if err != nil {
			return errResponse(err)
		}
		conv, err := res.GetAsVersion(p.Conf.CNIVersion)
		if err != nil {
			return errResponse(err)
		}
		var buf bytes.Buffer
		if err := conv.PrintTo(&buf); err != nil {
			return errResponse(err)
		}
		return &cniwire.Response{Result: bytes.TrimSpace(buf.Bytes())}
	case "DEL":
		err = p.DelContext(ctx, args)
	case "CHECK":
		err = p.CheckContext(ctx, args)
	case "STATUS":
		err = p.StatusContext(ctx, args)
	case "GC":
		err = p.GCContext(ctx, args)
	}
	if err != nil {
		return errResponse(err)
	}
	return &cniwire.Response{}
}
