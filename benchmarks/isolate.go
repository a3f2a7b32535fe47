package benchmarks

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

const isolatedEnv = "MULTINET_BENCH_ISOLATED"

// Isolate re-executes the program in new network and mount namespaces and returns its exit
// code (parent), or sets up the child's private node and returns -1 (child: go on). The child's
// network namespace is the simulated node's host; tmpfs over /run, /var/lib/cni and
// /var/lib/kubelet gives both stacks their default state paths (kubelet's checkpoint, CNI
// caches, device-info files, netns mounts) without touching the machine's.
func Isolate() (int, error) {
	if os.Getenv(isolatedEnv) == "" {
		cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.Env = append(os.Environ(), isolatedEnv+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Run(); err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				return ee.ExitCode(), nil
			}
			return 1, fmt.Errorf("run in private namespaces (needs root): %w", err)
		}
		return 0, nil
	}
	// Our mounts must not propagate back to the machine.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return 1, fmt.Errorf("make / private: %w", err)
	}
	for _, d := range []string{"/run", "/var/lib/cni", "/var/lib/kubelet"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return 1, err
		}
		if err := unix.Mount("tmpfs", d, "tmpfs", 0, "mode=0755"); err != nil {
			return 1, fmt.Errorf("tmpfs on %s: %w", d, err)
		}
	}
	return -1, nil
}
