package agent

import (
	"net"
	"path/filepath"
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
