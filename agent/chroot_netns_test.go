package agent_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The DaemonSet's shape: the agent's own root has no CNI plugins (its image holds only our
// binaries), the host's / is mounted in the pod (here: an rbind of / in the agent's own mount
// namespace, a slave of the host's as HostToContainer is), and --delegate-chroot points there.
// Debian's dynamically linked bridge, host-local, portmap and macvlan run from it on the
// node's netns and the pod's netns paths: the pod gets both interfaces and DEL gives
// everything back. Without the chroot the agent finds none of the plugins.
func TestShimAgentDelegateChroot(t *testing.T) {
	n := newNode(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skipf("util-linux unshare: %v", err)
	}
	hostroot := filepath.Join(n.dir, "hostroot")
	// The agent's view: /usr/lib/cni (the runtime's CNI_PATH here) hidden under an empty tmpfs,
	// mounted after the rbind so the "host's" copy keeps it.
	n.wrap = []string{"unshare", "--mount", "--propagation", "slave", "sh", "-c",
		`set -e; mkdir -p "$0"; mount --rbind / "$0"; mount -t tmpfs none ` + refPlugins + `; exec "$@"`, hostroot}
	n.startAgent("--delegate-chroot", hostroot)
	p := n.pod("web", "macvlan-conf", n.conf("multinet-shim", nil))
	if _, err := p.add(); err != nil {
		t.Fatalf("ADD with delegates in the chroot: %v\n%s", err, n.log())
	}
	p.assertAttached()
	if err := p.del(); err != nil {
		t.Fatal(err)
	}
	p.assertGone()
	n.stopAgent()

	// The same agent view without --delegate-chroot: the plugins are not there.
	n.startAgent()
	q := n.pod("db", "macvlan-conf", n.conf("multinet-shim", nil))
	if _, err := q.add(); err == nil {
		t.Fatal("ADD found the plugins in the agent's own root: the test cannot tell the chroot")
	}
	if _, err := os.Stat(filepath.Join(hostroot, "etc")); err == nil {
		t.Error("the rbind of / outlived the agent's mount namespace")
	}
}
