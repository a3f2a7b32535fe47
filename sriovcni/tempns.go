package sriovcni

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// tempNS returns the private netns a VF netdev is renamed in on its way between the host and a
// pod, bound to <stateDir>/netns/<vf>, and the function that closes it and, when it is empty
// again, removes it. An anonymous netns dies with a process killed mid-move (the agent, which
// runs this in-process, SIGKILLed), and the VF with it: a physical netdev goes to the initial
// netns (not the node's when the node runs in a container), after a delay no DEL waits for; a
// veth is destroyed. Pinned, the netns outlives the process and the DEL finds the VF in it. A
// pinned netns left by such a kill is reused: returnNetdev looks in it first. Callers hold the
// VF's lock.
func (p *Plugin) tempNS(vf string) (ns.NetNS, func(), error) {
	path := filepath.Join(p.store().dir, "netns", safeName(vf))
	if n, err := ns.GetNS(path); err == nil {
		return n, func() { unpin(n, path) }, nil
	}
	// Not there, or a file a kill left before its mount: start afresh.
	_ = unix.Unmount(path, unix.MNT_DETACH)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("sriov: vf %s: temporary netns %s: %w", vf, path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, nil, fmt.Errorf("sriov: vf %s: temporary netns: %w", vf, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("sriov: vf %s: temporary netns: %w", vf, err)
	}
	f.Close()
	if err := pinNewNetns(path); err != nil {
		os.Remove(path)
		return nil, nil, fmt.Errorf("sriov: vf %s: temporary netns %s: %w", vf, path, err)
	}
	n, err := ns.GetNS(path)
	if err != nil {
		_ = unix.Unmount(path, unix.MNT_DETACH)
		os.Remove(path)
		return nil, nil, fmt.Errorf("sriov: vf %s: temporary netns %s: %w", vf, path, err)
	}
	return n, func() { unpin(n, path) }, nil
}

// pinNewNetns creates a network namespace and bind-mounts it on path, on a thread of its own
// that goes back to the caller's netns (or, when it cannot, stays locked and dies with it).
func pinNewNetns(path string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		err = unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, "")
		if serr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); serr == nil {
			runtime.UnlockOSThread()
		}
		if err != nil {
			err = fmt.Errorf("bind mount: %w", err)
		}
		errc <- err
	}()
	return <-errc
}

// unpin closes the netns and removes its pin, unless a netdev is still in it (a move back that
// failed): then the pin stays, so the DEL that retries finds the VF there.
func unpin(n ns.NetNS, path string) {
	busy := false
	_ = n.Do(func(ns.NetNS) error {
		busy = holdsNetdev()
		return nil
	})
	n.Close()
	if busy {
		return
	}
	_ = unix.Unmount(path, unix.MNT_DETACH)
	os.Remove(path)
}

// holdsNetdev says whether the current netns has a link besides lo.
func holdsNetdev() bool {
	_, err := onlyLink("")
	return err == nil
}
