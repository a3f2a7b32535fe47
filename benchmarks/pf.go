package benchmarks

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/podresources"
	"github.com/multinet-io/multinet/sriovcni"
	"github.com/multinet-io/multinet/vfmanager"
)

// PFOptions is a run on a real node's PF (multinet-bench --pf): its VFs as they are, no
// simulated tree, no API server.
type PFOptions struct {
	PF         string // the PF's netdev
	SysfsRoot  string
	BinDir     string // the sriov plugin
	Dir        string // scratch dir (removed by the caller)
	Cycles     int
	Checkpoint string // kubelet's device checkpoint: VFs it gave a pod are left alone
	Log        *slog.Logger
	Version    string // multinet, for the report
}

// The VLAN both stacks give a VF through the PF in the --pf scenarios.
const pfBenchVLAN = 100

// pfVF is one VF the run uses, and what to put back.
type pfVF struct {
	index        int
	addr, netdev string // netdev "" for a VF on a userspace driver
	mac          string // the netdev's MAC, to find it again under another name
	state        vfmanager.VFState
	driver       string
}

// PF scenarios: names are part of the JSON contract.
const (
	pfNetdevScenario = "pf-netdev-vf"
	pfVFIOScenario   = "pf-vfio-vf"
)

// RunPF measures attach and detach of the PF's free VFs: the sriov plugin exec'd through
// libcni as a runtime does it (netdev VFs: VLAN through the PF, netdev moved into the pod and
// renamed; vfio-pci VFs: VLAN through the PF), next to the floor (the same netlink operations
// in this process). Every VF's PF-side settings, name and namespace are put back at the end,
// and checked.
func RunPF(o PFOptions) (rep *Report, err error) {
	sys := pci.New(o.SysfsRoot)
	m := vfmanager.New(sys)
	pfAddr, err := sys.ByNetdev(o.PF)
	if err != nil {
		return nil, fmt.Errorf("pf %s: %w", o.PF, err)
	}
	vfs, err := pfVFs(sys, m, o, pfAddr)
	if err != nil {
		return nil, err
	}
	var netdevVFs, vfioVFs []*pfVF
	for _, v := range vfs {
		if v.netdev != "" {
			netdevVFs = append(netdevVFs, v)
		} else {
			vfioVFs = append(vfioVFs, v)
		}
	}
	if len(vfs) == 0 {
		return nil, fmt.Errorf("pf %s: no free VF to measure (see the log for why each was left alone)", o.PF)
	}
	host, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer host.Close()
	defer func() {
		if rerr := restorePF(m, o.PF, vfs, host); rerr != nil {
			err = errors.Join(err, fmt.Errorf("pf %s: restoring its VFs: %w", o.PF, rerr))
		}
	}()

	// The plugin's state and device-info in the scratch dir; the pool check is off because the
	// operator running the bench picks the VFs, not a NAD.
	os.Setenv(sriovcni.EnvStateDir, filepath.Join(o.Dir, "state"))
	os.Setenv(devinfo.EnvBase, filepath.Join(o.Dir, "devinfo"))
	os.Setenv(sriovcni.EnvPoolCheck, sriovcni.PoolCheckOff)
	os.Setenv("MULTINET_SYSFS_ROOT", o.SysfsRoot)

	mi := Machine(Options{MultinetVersion: o.Version})
	mi.Versions = map[string]string{"multinet": o.Version}
	rep = &Report{Machine: mi, PF: fmt.Sprintf("%s (%s, %s)", o.PF, pfAddr, pfDriver(sys, pfAddr))}
	for _, sc := range []struct {
		name string
		vfs  []*pfVF
	}{{pfNetdevScenario, netdevVFs}, {pfVFIOScenario, vfioVFs}} {
		if len(sc.vfs) == 0 {
			o.Log.Info("no VF of this kind on the PF; scenario skipped", "scenario", sc.name)
			continue
		}
		o.Log.Info("scenario", "name", sc.name, "vfs", len(sc.vfs))
		samples := map[string][]sample{}
		for i := 0; i < o.Cycles; i++ {
			v := sc.vfs[i%len(sc.vfs)]
			order := []string{"sriov", "floor"}
			if i%2 == 1 {
				order = []string{"floor", "sriov"}
			}
			for _, st := range order {
				s := pfCycle(o, m, st, v, host, fmt.Sprintf("%s-%s-%d", slug(sc.name), st, i))
				if s.addErr != nil || s.delErr != nil {
					o.Log.Warn("cycle failed", "scenario", sc.name, "stack", st, "vf", v.addr, "add", s.addErr, "del", s.delErr)
				}
				samples[st] = append(samples[st], s)
			}
		}
		for _, st := range []string{"sriov", "floor"} {
			rep.Scenarios = append(rep.Scenarios, summarize(sc.name, st, samples[st], nil))
		}
	}
	for _, s := range rep.Scenarios {
		if s.AddFailures > 0 || s.DelFailures > 0 || s.WrongAttach > 0 {
			return rep, fmt.Errorf("%s/%s failed: %s", s.Name, s.Stack, s.FirstError)
		}
	}
	return rep, nil
}

func pfDriver(sys *pci.SysFS, addr string) string {
	d, _ := sys.Driver(addr)
	return d
}

// pfVFs lists the VFs the run may use, with their state saved, and logs why others are left
// alone: one kubelet gave a pod, a netdev the host uses (up or enslaved), a kernel-driver VF
// whose netdev is in another namespace (a pod's), a driver of neither kind.
func pfVFs(sys *pci.SysFS, m *vfmanager.Manager, o PFOptions, pfAddr string) ([]*pfVF, error) {
	addrs, err := sys.VFs(pfAddr)
	if err != nil {
		return nil, fmt.Errorf("pf %s: %w", o.PF, err)
	}
	owners := map[string][]string{}
	if o.Checkpoint != "" {
		if owners, err = podresources.DeviceOwners(o.Checkpoint); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("kubelet checkpoint %s: %w", o.Checkpoint, err)
		}
	}
	var out []*pfVF
	for i, addr := range addrs {
		skip := func(why string) { o.Log.Info("VF left alone", "vf", i, "addr", addr, "why", why) }
		if uids := owners[addr]; len(uids) > 0 {
			skip("kubelet gave it to pod " + strings.Join(uids, ","))
			continue
		}
		v := &pfVF{index: i, addr: addr}
		v.driver, _ = sys.Driver(addr)
		nds, _ := sys.Netdevs(addr)
		switch {
		case v.driver == "vfio-pci":
		case len(nds) == 1:
			l, err := netlink.LinkByName(nds[0])
			if err != nil {
				return nil, fmt.Errorf("vf %s: netdev %s: %w", addr, nds[0], err)
			}
			if a := l.Attrs(); a.Flags&net.FlagUp != 0 || a.MasterIndex != 0 {
				skip("its netdev " + nds[0] + " is up or enslaved on the host")
				continue
			}
			v.netdev, v.mac = nds[0], l.Attrs().HardwareAddr.String()
		case v.driver == "":
			skip("no driver bound")
			continue
		default:
			skip(fmt.Sprintf("driver %s with %d netdevs in this namespace (in a pod?)", v.driver, len(nds)))
			continue
		}
		if v.state, err = m.ReadVF(o.PF, i); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// pfCycle is one attach and detach of a VF by one stack, in a fresh pod netns.
func pfCycle(o PFOptions, m *vfmanager.Manager, stack string, v *pfVF, host netns.NsHandle, name string) (s sample) {
	pod, err := testutils.NewNS()
	if err != nil {
		s.addErr = err
		return s
	}
	defer func() {
		pod.Close()
		testutils.UnmountNS(pod)
		if err := bringHome(v); err != nil && s.delErr == nil && s.addErr == nil {
			s.delErr = err
		}
	}()
	if stack == "floor" {
		s.add, s.addErr = timed(func() error { return floorAttachVF(o.PF, v, pod) })
		if s.addErr == nil {
			s.del, s.delErr = timed(func() error { return floorDetachVF(o.PF, v, pod, host) })
		}
		return s
	}
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"pfbench","plugins":[{"type":"sriov","deviceID":%q,"vlan":%d}]}`, v.addr, pfBenchVLAN)
	list, err := libcni.ConfListFromBytes([]byte(conf))
	if err != nil {
		s.addErr = err
		return s
	}
	rt := &libcni.RuntimeConf{ContainerID: "cid-" + name, NetNS: pod.Path(), IfName: "net1",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", podNamespace}, {"K8S_POD_NAME", name}}}
	ex := &usageExec{}
	cni := libcni.NewCNIConfigWithCacheDir([]string{o.BinDir}, filepath.Join(o.Dir, "runtime-cache"), ex)
	s.add, s.addErr = timed(func() error { _, err := cni.AddNetworkList(context.Background(), list, rt); return err })
	s.addUsage = ex.last()
	if s.addErr != nil {
		return s
	}
	s.vErr = verifyPFAttach(m, o.PF, v, pod)
	s.del, s.delErr = timed(func() error { return cni.DelNetworkList(context.Background(), list, rt) })
	s.delUsage = ex.last()
	if s.delErr == nil {
		if _, err := netlink.LinkByName(v.netdev); v.netdev != "" && err != nil {
			s.delErr = fmt.Errorf("vf %s: netdev %s not back on the host after DEL: %w", v.addr, v.netdev, err)
		}
	}
	return s
}

func timed(f func() error) (time.Duration, error) {
	start := time.Now()
	err := f()
	return time.Since(start), err
}

// verifyPFAttach checks what a user would: the PF reports the VLAN, and a netdev VF is net1 in
// the pod, up.
func verifyPFAttach(m *vfmanager.Manager, pf string, v *pfVF, pod ns.NetNS) error {
	st, err := m.ReadVF(pf, v.index)
	if err != nil {
		return err
	}
	if st.VLAN != pfBenchVLAN {
		return fmt.Errorf("vf %s: the PF reports vlan %d after ADD, want %d", v.addr, st.VLAN, pfBenchVLAN)
	}
	if v.netdev == "" {
		return nil
	}
	return pod.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("net1")
		if err != nil {
			return fmt.Errorf("vf %s: no net1 in the pod: %w", v.addr, err)
		}
		if l.Attrs().Flags&net.FlagUp == 0 {
			return fmt.Errorf("vf %s: net1 in the pod is down", v.addr)
		}
		return nil
	})
}

// floorAttachVF: the VLAN through the PF and, for a netdev VF, the netdev into the pod,
// renamed net1 and up. Nothing else: no state file, no exec.
func floorAttachVF(pf string, v *pfVF, pod ns.NetNS) error {
	pfl, err := netlink.LinkByName(pf)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetVfVlan(pfl, v.index, pfBenchVLAN); err != nil {
		return fmt.Errorf("vf %d vlan: %w", v.index, err)
	}
	if v.netdev == "" {
		return nil
	}
	l, err := netlink.LinkByName(v.netdev)
	if err != nil {
		return err
	}
	target, err := netns.GetFromPath(pod.Path())
	if err != nil {
		return err
	}
	defer target.Close()
	if err := netlink.LinkSetNsFd(l, int(target)); err != nil {
		return err
	}
	h, err := netlink.NewHandleAt(target, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer h.Close()
	pl, err := h.LinkByName(v.netdev)
	if err != nil {
		return err
	}
	if err := h.LinkSetName(pl, "net1"); err != nil {
		return err
	}
	return h.LinkSetUp(pl)
}

// floorDetachVF undoes floorAttachVF: down, the name back, home, the VLAN as it was.
func floorDetachVF(pf string, v *pfVF, pod ns.NetNS, host netns.NsHandle) error {
	if v.netdev != "" {
		target, err := netns.GetFromPath(pod.Path())
		if err != nil {
			return err
		}
		defer target.Close()
		h, err := netlink.NewHandleAt(target, unix.NETLINK_ROUTE)
		if err != nil {
			return err
		}
		defer h.Close()
		pl, err := h.LinkByName("net1")
		if err != nil {
			return err
		}
		if err := h.LinkSetDown(pl); err != nil {
			return err
		}
		if err := h.LinkSetName(pl, v.netdev); err != nil {
			return err
		}
		if err := h.LinkSetNsFd(pl, int(host)); err != nil {
			return err
		}
	}
	pfl, err := netlink.LinkByName(pf)
	if err != nil {
		return err
	}
	return netlink.LinkSetVfVlan(pfl, v.index, v.state.VLAN)
}

// bringHome makes sure a netdev VF is in the host under its name: one a failed DEL left in the
// pod comes back when the pod's netns goes (asynchronously, under the pod's name, found by
// MAC), and is renamed.
func bringHome(v *pfVF) error {
	if v.netdev == "" {
		return nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := netlink.LinkByName(v.netdev); err == nil {
			return nil
		}
		links, _ := netlink.LinkList()
		for _, l := range links {
			if l.Attrs().HardwareAddr.String() == v.mac && l.Attrs().ParentIndex == 0 && l.Type() == "device" {
				netlink.LinkSetDown(l)
				if err := netlink.LinkSetName(l, v.netdev); err != nil {
					return fmt.Errorf("vf %s: rename %s back to %s: %w", v.addr, l.Attrs().Name, v.netdev, err)
				}
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("vf %s: netdev %s (%s) is not back on the host", v.addr, v.netdev, v.mac)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// restorePF puts every used VF back as found: the netdev under its name in the host, down as it
// was, and the PF-side settings; then checks.
func restorePF(m *vfmanager.Manager, pf string, vfs []*pfVF, host netns.NsHandle) error {
	var errs []error
	for _, v := range vfs {
		if v.netdev != "" {
			if err := bringHome(v); err != nil {
				errs = append(errs, err)
			} else if l, err := netlink.LinkByName(v.netdev); err == nil && l.Attrs().Flags&net.FlagUp != 0 {
				netlink.LinkSetDown(l)
			}
		}
		if err := m.RestoreVF(pf, v.index, v.state); err != nil {
			errs = append(errs, err)
			continue
		}
		if now, err := m.ReadVF(pf, v.index); err != nil || now != v.state {
			errs = append(errs, fmt.Errorf("vf %s: PF settings %+v after the run, %+v before (%v)", v.addr, now, v.state, err))
		}
	}
	return errors.Join(errs...)
}
