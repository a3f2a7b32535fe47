package meta

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/multinet-io/multinet/pci"
)

// HostViews keeps the policy's host view for a long-lived process (the node agent): reading
// every host link, route and address costs milliseconds per ADD on a busy node, and the host
// changes far less often than pods come. A rtnetlink subscription (links, addresses, routes,
// nexthops) in the namespace NewHostViews runs in marks every cached view stale; a stale view
// is read again on the next ADD. Never served: a view read before a change the kernel has
// announced, queued or consumed (see view). Once the subscription fails every call reads the
// host, as a one-shot plugin does.
type HostViews struct {
	mu     sync.Mutex
	fd     int  // the subscription, closed by Close
	broken bool // the subscription failed: nothing is cached
	gen    uint64
	views  map[string]cachedView
	reads  int // host reads, for tests
	stop   [2]int
	done   chan struct{}
	closed bool
}

type cachedView struct {
	hv  *hostView
	gen uint64
}

// maxHostViews bounds the cache: one view per distinct policy.protectedLinks among the confs.
const maxHostViews = 16

var hostGroups = []int{unix.RTNLGRP_LINK, unix.RTNLGRP_IPV4_IFADDR, unix.RTNLGRP_IPV6_IFADDR,
	unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV6_ROUTE, unix.RTNLGRP_NEXTHOP}

// NewHostViews subscribes to the host's changes in the calling thread's network namespace
// (the node's, for the agent). Close stops it.
func NewHostViews() (*HostViews, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("host view: netlink socket: %w", err)
	}
	err = unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	for _, g := range hostGroups {
		if err == nil {
			err = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, g)
		}
	}
	var stop [2]int
	if err == nil {
		err = unix.Pipe2(stop[:], unix.O_CLOEXEC)
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("host view: subscribe to link, address and route changes: %w", err)
	}
	h := &HostViews{fd: fd, views: map[string]cachedView{}, stop: stop, done: make(chan struct{})}
	go h.watch()
	return h, nil
}

// watch marks the views stale on every batch of messages, an overflow (lost messages) included.
func (h *HostViews) watch() {
	defer close(h.done)
	for {
		fds := []unix.PollFd{{Fd: int32(h.fd), Events: unix.POLLIN}, {Fd: int32(h.stop[0]), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, -1); err != nil && !errors.Is(err, unix.EINTR) {
			h.fail()
			return
		}
		if fds[1].Revents != 0 {
			return
		}
		if fds[0].Revents == 0 {
			continue
		}
		// Drain and bump under the lock: view never sees the queue empty with the bump to come.
		h.mu.Lock()
		err := h.drainLocked()
		h.gen++
		h.mu.Unlock()
		if err != nil {
			h.fail()
			return
		}
	}
}

func (h *HostViews) drainLocked() error {
	buf := make([]byte, 64<<10)
	for {
		_, _, err := unix.Recvfrom(h.fd, buf, unix.MSG_DONTWAIT)
		switch {
		case err == nil, errors.Is(err, unix.ENOBUFS), errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.EAGAIN):
			return nil
		default:
			return err
		}
	}
}

// fail drops the cache for good: from now on every call reads the host.
func (h *HostViews) fail() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.broken = true
	h.views = nil
}

// pendingLocked: a message (or an overflow error) is queued that watch has not consumed yet.
func (h *HostViews) pendingLocked() bool {
	fds := []unix.PollFd{{Fd: int32(h.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err != nil || n > 0
}

// view is the host view for a conf's protected links, read again unless cached with no change
// announced since its read began.
func (h *HostViews) view(sys *pci.SysFS, protected []string) (*hostView, error) {
	key := strings.Join(protected, "\x00")
	h.mu.Lock()
	live := !h.broken
	if live && !h.pendingLocked() {
		if c, ok := h.views[key]; ok && c.gen == h.gen {
			h.mu.Unlock()
			hv := *c.hv
			hv.sys = sys
			return &hv, nil
		}
	}
	gen := h.gen
	h.reads++
	h.mu.Unlock()
	hv, err := readHost(sys, protected)
	if err != nil || !live {
		return hv, err
	}
	h.mu.Lock()
	if h.views != nil && h.gen == gen {
		if len(h.views) >= maxHostViews {
			clear(h.views)
		}
		h.views[key] = cachedView{hv: hv, gen: gen}
	}
	h.mu.Unlock()
	return hv, nil
}

// Close stops the subscription.
func (h *HostViews) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	h.mu.Unlock()
	unix.Write(h.stop[1], []byte{0})
	<-h.done
	h.fail()
	unix.Close(h.fd)
	unix.Close(h.stop[0])
	unix.Close(h.stop[1])
	return nil
}
