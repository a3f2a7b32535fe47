package agent

import (
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// The shim half-closes its connection after the request and waits for the answer: that is not
// a hang-up. Closing it (the shim killed) is, and is seen within a poll round.
func TestWatchHangupTellsHalfCloseFromClose(t *testing.T) {
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "s"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	shim, err := net.DialUnix("unix", nil, l.Addr().(*net.UnixAddr))
	if err != nil {
		t.Fatal(err)
	}
	agentSide, err := l.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer agentSide.Close()
	hung := make(chan struct{})
	stop := watchHangup(agentSide, func() { close(hung) })
	defer stop()
	shim.Write([]byte("{}"))
	shim.CloseWrite()
	select {
	case <-hung:
		t.Fatal("a half-close (the shim waiting for the answer) taken for a hang-up")
	case <-time.After(500 * time.Millisecond):
	}
	shim.Close()
	select {
	case <-hung:
	case <-time.After(2 * time.Second):
		t.Fatal("the shim closed its connection and no hang-up was seen")
	}
}

// stop ends the poll round in progress, not after it: serveConn calls it before it answers and
// closes the connection (the shim reads the answer to EOF), so every CNI call waited up to that
// round (100 ms) before. With a round of an hour, stop and the close must still return while
// the shim waits on its half-closed connection, and no hang-up is reported for a call that was
// done.
func TestWatchHangupStopDoesNotWaitForThePollRound(t *testing.T) {
	defer func(ms int) { hangupPollMS = ms }(hangupPollMS)
	hangupPollMS = int(time.Hour / time.Millisecond)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "s"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	shim, err := net.DialUnix("unix", nil, l.Addr().(*net.UnixAddr))
	if err != nil {
		t.Fatal(err)
	}
	agentSide, err := l.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer shim.Close()
	shim.CloseWrite()
	var hung atomic.Bool
	stop := watchHangup(agentSide, func() { hung.Store(true) })
	time.Sleep(200 * time.Millisecond) // the watcher is in its poll
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("stop waits for the watcher's poll round")
	}
	// The shim still waits for EOF: the close must not wait for the watcher's round.
	closed := make(chan struct{})
	go func() { agentSide.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("closing the connection waits for the watcher's poll round")
	}
	if hung.Load() {
		t.Error("a hang-up reported after stop")
	}
}
