// Command runner boots a Linux guest under QEMU with emulated Intel 82576 (igb) SR-IOV NICs,
// runs the project's in-guest Go tests there, and turns the serial console into a pass/fail
// per test. A guest that hangs is killed at a bound; no QEMU process outlives the runner.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Modules the guest loads, in dependency order (igb needs dca and i2c-algo-bit; vfio-pci needs
// vfio-pci-core, which needs irqbypass).
var modules = []string{"dca", "i2c-algo-bit", "igb", "igbvf", "irqbypass", "vfio", "vfio_iommu_type1", "vfio-pci-core", "vfio-pci", "veth",
	// vDPA: the bus, both of its drivers and VDUSE (the guest kernel has no vdpa_sim).
	"vdpa", "vhost_iotlb", "vhost", "vhost_vdpa", "virtio_vdpa", "vduse", "failover", "net_failover", "virtio_net"}

// The DPDK application the guest drives a vfio-pci VF with: Debian's dpdk-testpmd (e2e/vm/deps.sh
// installs it on the host) with the libraries ldd resolves for it on the host, and the PMDs it
// needs from DPDK's plugin dir. EAL dlopens every PMD in that dir at start, so the guest gets
// only these (PCI bus, igb VF, the ring mempool) and their libraries, not all 128 Debian ships.
const (
	testpmd   = "/usr/bin/dpdk-testpmd"
	dpdkPMDir = "/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0"
)

var dpdkPMDs = []string{"librte_bus_pci.so", "librte_bus_vdev.so", "librte_net_e1000.so", "librte_mempool_ring.so"}

func main() {
	parts := flag.String("parts", "", "directory with the unpacked kernel and busybox packages (e2e/vm/deps.sh prints it)")
	bins := flag.String("bin", "bin", "directory with the project's static binaries")
	pkgs := flag.String("pkgs", "./e2e/vm/guest", "comma-separated packages whose e2e_vm tests run in the guest")
	timeout := flag.Duration("timeout", 10*time.Minute, "bound on the whole guest run")
	run := flag.String("run", "", "only run tests matching this regexp (go test -run)")
	logPath := flag.String("log", "", "where to keep the full console log (default: in the work dir)")
	flag.Parse()
	if err := mainErr(*parts, *bins, strings.Split(*pkgs, ","), *timeout, *run, *logPath); err != nil {
		fmt.Fprintf(os.Stderr, "e2e-vm: %v\n", err)
		os.Exit(1)
	}
}

func mainErr(parts, bins string, pkgs []string, timeout time.Duration, run, logPath string) error {
	if parts == "" {
		return fmt.Errorf("-parts is required")
	}
	work, err := os.MkdirTemp("", "multinet-vm-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if logPath == "" {
		logPath = filepath.Join(os.TempDir(), "multinet-vm-console.log")
	}
	start := time.Now()
	kernel, err := buildInitramfs(work, parts, bins, pkgs)
	if err != nil {
		return fmt.Errorf("build guest: %w", err)
	}
	fmt.Printf("e2e-vm: guest built in %s; booting (timeout %s, console log %s)\n", time.Since(start).Round(time.Second), timeout, logPath)
	res, err := boot(kernel, filepath.Join(work, "initrd.gz"), timeout, run, logPath)
	if err != nil {
		return err
	}
	fmt.Printf("e2e-vm: guest run took %s\n", time.Since(start).Round(time.Second))
	return res.report(os.Stdout)
}

func sh(dir, script string) error {
	cmd := exec.Command("sh", "-ec", script)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", script, err, out)
	}
	return nil
}

// buildInitramfs lays out busybox, the modules, the project's binaries and the test binaries,
// with an /init that runs the tests and powers off. It returns the kernel image path.
func buildInitramfs(work, parts, bins string, pkgs []string) (string, error) {
	root := filepath.Join(work, "root")
	for _, d := range []string{"bin", "sbin", "lib/modules", "tests", "proc", "sys", "dev", "run", "tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return "", err
		}
	}
	if err := os.Symlink("/run", filepath.Join(root, "var")); err != nil {
		return "", err
	}
	if err := copyFile(filepath.Join(parts, "root/bin/busybox"), filepath.Join(root, "bin/busybox"), 0o755); err != nil {
		return "", err
	}
	kernels, _ := filepath.Glob(filepath.Join(parts, "root/boot/vmlinuz-*"))
	if len(kernels) != 1 {
		return "", fmt.Errorf("want one kernel in %s/root/boot, found %v", parts, kernels)
	}
	modRoots, _ := filepath.Glob(filepath.Join(parts, "root/lib/modules/*"))
	if len(modRoots) != 1 {
		return "", fmt.Errorf("want one module tree in %s, found %v", parts, modRoots)
	}
	for _, m := range modules {
		var found string
		filepath.Walk(modRoots[0], func(p string, info os.FileInfo, err error) error {
			if err == nil && filepath.Base(p) == m+".ko.xz" {
				found = p
			}
			return nil
		})
		if found == "" {
			return "", fmt.Errorf("module %s not in %s", m, modRoots[0])
		}
		if err := sh(root, fmt.Sprintf("xz -dc %q > lib/modules/%s.ko", found, m)); err != nil {
			return "", err
		}
	}
	binaries, _ := filepath.Glob(filepath.Join(bins, "*"))
	if len(binaries) == 0 {
		return "", fmt.Errorf("no binaries in %s: run make build", bins)
	}
	for _, b := range binaries {
		if st, err := os.Stat(b); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			continue // bin/bench and other tool folders, make image's tarball: not guest binaries
		}
		if err := copyFile(b, filepath.Join(root, "bin", filepath.Base(b)), 0o755); err != nil {
			return "", err
		}
	}
	for _, p := range pkgs {
		name := strings.NewReplacer("./", "", "/", "-").Replace(strings.TrimSpace(p)) + ".test"
		cmd := exec.Command("go", "test", "-c", "-tags", "e2e_vm", "-o", filepath.Join(root, "tests", name), p)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go test -c %s: %w\n%s", p, err, out)
		}
	}
	if err := addTestpmd(root); err != nil {
		return "", err
	}
	var load strings.Builder
	for _, m := range modules {
		fmt.Fprintf(&load, "insmod /lib/modules/%s.ko || echo \"MULTINET-E2E-MODULE-FAIL %s\"\n", m, m)
	}
	initScript := `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/netns
` + load.String() + `ip link set lo up
export MULTINET_E2E_GUEST=1
for kv in $(cat /proc/cmdline); do case "$kv" in multinet.*=*) k=${kv#multinet.}; export "${k%%=*}=${kv#*=}";; esac; done
echo "MULTINET-E2E-START"
for t in /tests/*.test; do
  cd /tmp
  $t -test.v -test.timeout 8m ${MULTINET_RUN:+-test.run "$MULTINET_RUN"} 2>&1
  echo "MULTINET-E2E-EXIT $(basename $t) $?"
done
echo "MULTINET-E2E-DONE"
poweroff -f
`
	if err := os.WriteFile(filepath.Join(root, "init"), []byte(initScript), 0o755); err != nil {
		return "", err
	}
	return kernels[0], sh(root, "find . | cpio -o -H newc --quiet | gzip -1 > ../initrd.gz")
}

// addTestpmd copies dpdk-testpmd, the selected PMDs and every library they load into the guest
// root at the host's paths.
func addTestpmd(root string) error {
	if _, err := os.Stat(testpmd); err != nil {
		return fmt.Errorf("%w (e2e/vm/deps.sh installs it)", err)
	}
	// glibc dlopens libgcc_s when a thread is cancelled (EAL's at exit); ldd cannot see that.
	files := []string{testpmd, "/lib/x86_64-linux-gnu/libgcc_s.so.1"}
	for _, pmd := range dpdkPMDs {
		names, _ := filepath.Glob(filepath.Join(dpdkPMDir, pmd+"*"))
		if len(names) == 0 {
			return fmt.Errorf("DPDK PMD %s not in %s (e2e/vm/deps.sh installs it)", pmd, dpdkPMDir)
		}
		files = append(files, names...)
	}
	// Each library's own dependencies, resolved from it: a library may reach a name testpmd
	// reaches by its RUNPATH through the system library dir instead.
	seen := map[string]bool{}
	for i := 0; i < len(files); i++ {
		f := files[i]
		out, err := exec.Command("ldd", f).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ldd %s: %w\n%s", f, err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "not found") {
				return fmt.Errorf("ldd %s: %s", f, strings.TrimSpace(line))
			}
			fields := strings.Fields(line)
			var lib string
			switch {
			case len(fields) >= 3 && fields[1] == "=>":
				lib = fields[2]
			case len(fields) >= 1 && filepath.IsAbs(fields[0]):
				lib = fields[0] // the dynamic loader
			}
			if lib != "" && filepath.IsAbs(lib) && !seen[lib] {
				seen[lib] = true
				files = append(files, lib)
			}
		}
	}
	for _, f := range files {
		if err := copyHostPath(root, f); err != nil {
			return err
		}
	}
	return nil
}

// copyHostPath puts the host file f into the guest root: its content once, at the fully
// resolved path, and f's own name as a symlink to it. One file per library, however many names
// it is reached by, matters: the loader tells libraries apart by inode, and a DPDK bus or driver
// loaded twice registers twice.
func copyHostPath(root, f string) error {
	real, err := filepath.EvalSymlinks(f)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(filepath.Join(root, real)); os.IsNotExist(err) {
		st, err := os.Stat(real)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(real)), 0o755); err != nil {
			return err
		}
		if err := copyFile(real, filepath.Join(root, real), st.Mode().Perm()); err != nil {
			return err
		}
	}
	// A directory that is a symlink on the host (merged /usr: /lib64 -> usr/lib64) is one in
	// the guest too, unless the guest has its own there (/lib holds the guest's modules).
	dir := filepath.Dir(f)
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	if realDir != dir {
		if _, err := os.Lstat(filepath.Join(root, dir)); os.IsNotExist(err) {
			if err := os.MkdirAll(filepath.Join(root, filepath.Dir(dir)), 0o755); err != nil {
				return err
			}
			if err := os.Symlink(realDir, filepath.Join(root, dir)); err != nil {
				return err
			}
		}
	}
	name := filepath.Join(realDir, filepath.Base(f))
	if name == real {
		return nil
	}
	if err := os.MkdirAll(filepath.Join(root, realDir), 0o755); err != nil {
		return err
	}
	if _, err := os.Lstat(filepath.Join(root, name)); err == nil {
		return nil
	}
	return os.Symlink(real, filepath.Join(root, name))
}

func copyFile(from, to string, mode os.FileMode) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

type result struct {
	order    []string
	status   map[string]string   // test -> PASS/FAIL/SKIP
	output   map[string][]string // test -> lines while it ran
	exits    map[string]string   // test binary -> exit code
	done     bool
	hung     bool
	modFails []string
	tail     []string
	elapsed  time.Duration
	timeout  time.Duration
}

var (
	runRe  = regexp.MustCompile(`^=== RUN\s+(\S+)`)
	endRe  = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (\S+)`)
	exitRe = regexp.MustCompile(`^MULTINET-E2E-EXIT (\S+) (\d+)`)
	modRe  = regexp.MustCompile(`^MULTINET-E2E-MODULE-FAIL (\S+)`)
)

// boot runs QEMU with two igb PFs at fixed slots (their VFs sit at 00:12.x and 00:14.x) and
// reads the serial console until the guest powers off or the bound passes.
func boot(kernel, initrd string, timeout time.Duration, run, logPath string) (*result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		if _, ok := <-sigs; ok {
			cancel()
		}
	}()
	defer signal.Stop(sigs)

	appendArgs := "console=ttyS0 quiet intel_iommu=on panic=-1"
	if run != "" {
		appendArgs += " multinet.MULTINET_RUN=" + run
	}
	for _, kv := range os.Environ() {
		// Pass MULTINET_E2E_* switches (e.g. the deliberately broken test) into the guest.
		if strings.HasPrefix(kv, "MULTINET_E2E_") && !strings.HasPrefix(kv, "MULTINET_E2E_GUEST") {
			appendArgs += " multinet." + kv
		}
	}
	args := []string{
		// -cpu max: Debian's DPDK needs SSE4.2, which QEMU's default TCG CPU lacks.
		"-machine", "q35,kernel-irqchip=split", "-accel", "tcg", "-cpu", "max", "-m", "1536", "-smp", "2",
		"-nographic", "-no-reboot", "-device", "intel-iommu,intremap=on,caching-mode=on",
		"-kernel", kernel, "-initrd", initrd, "-append", appendArgs,
		"-netdev", "user,id=n0,restrict=on", "-device", "igb,netdev=n0,addr=0x2",
		"-netdev", "user,id=n1,restrict=on", "-device", "igb,netdev=n1,addr=0x4",
	}
	cmd := exec.Command("qemu-system-x86_64", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	cmd.Stdin = nil
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	kill := func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	defer kill()
	go func() {
		<-ctx.Done()
		kill()
	}()

	res := &result{status: map[string]string{}, output: map[string][]string{}, exits: map[string]string{}, timeout: timeout}
	var current []string
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		fmt.Fprintln(logf, line)
		res.tail = append(res.tail, line)
		if len(res.tail) > 40 {
			res.tail = res.tail[1:]
		}
		switch {
		case runRe.MatchString(line):
			name := runRe.FindStringSubmatch(line)[1]
			if _, seen := res.status[name]; !seen {
				res.order = append(res.order, name)
				res.status[name] = "RUNNING"
			}
			current = append(current, name)
			fmt.Println("  " + line)
		case endRe.MatchString(line):
			m := endRe.FindStringSubmatch(line)
			res.status[m[2]] = m[1]
			fmt.Println("  " + strings.TrimSpace(line))
		case exitRe.MatchString(line):
			m := exitRe.FindStringSubmatch(line)
			res.exits[m[1]] = m[2]
		case modRe.MatchString(line):
			res.modFails = append(res.modFails, modRe.FindStringSubmatch(line)[1])
		case line == "MULTINET-E2E-DONE":
			res.done = true
		}
		for _, n := range current {
			if res.status[n] == "RUNNING" {
				res.output[n] = append(res.output[n], line)
			}
		}
	}
	_ = cmd.Wait()
	res.elapsed = time.Since(start)
	res.hung = !res.done && ctx.Err() != nil
	return res, nil
}

func (r *result) report(w io.Writer) error {
	pass, fail, skip := 0, 0, 0
	var failed []string
	for _, n := range r.order {
		switch r.status[n] {
		case "PASS":
			pass++
		case "SKIP":
			skip++
		default:
			fail++
			failed = append(failed, n)
		}
	}
	sort.Strings(failed)
	for _, n := range failed {
		if strings.Contains(n, "/") && r.status[strings.SplitN(n, "/", 2)[0]] != "" {
			continue // shown with its parent
		}
		fmt.Fprintf(w, "\n--- in-guest failure: %s (%s)\n", n, strings.ToLower(orRunning(r.status[n])))
		for _, l := range r.output[n] {
			fmt.Fprintln(w, "    "+l)
		}
	}
	var problems []string
	if len(r.modFails) > 0 {
		problems = append(problems, "modules failed to load: "+strings.Join(r.modFails, ", "))
	}
	if r.hung {
		problems = append(problems, fmt.Sprintf("guest hung: no end of run after %s; QEMU killed", r.timeout))
	} else if !r.done {
		problems = append(problems, "guest stopped before the end of the run")
	}
	for bin, code := range r.exits {
		if code != "0" && fail == 0 {
			problems = append(problems, fmt.Sprintf("%s exited %s", bin, code))
		}
	}
	if len(r.order) == 0 {
		problems = append(problems, "no test ran in the guest")
	}
	if len(problems) > 0 {
		fmt.Fprintln(w, "\nlast console lines:")
		for _, l := range r.tail {
			fmt.Fprintln(w, "    "+l)
		}
	}
	fmt.Fprintf(w, "\ne2e-vm: %d passed, %d failed, %d skipped in the guest (%s)\n", pass, fail, skip, r.elapsed.Round(time.Second))
	if fail > 0 || len(problems) > 0 {
		if len(problems) > 0 {
			return fmt.Errorf("%s", strings.Join(problems, "; "))
		}
		return fmt.Errorf("%d in-guest test(s) failed: %s", fail, strings.Join(failed, ", "))
	}
	return nil
}

func orRunning(s string) string {
	if s == "RUNNING" {
		return "did not finish"
	}
	return s
}
