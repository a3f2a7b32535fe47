// Package doctor reads a node's multinet state (the sriov plugin's ownership records, caches,
// quarantine and problem records, the meta-plugin's delegate caches, host-local leases,
// kubelet's device checkpoint and PodResources API, vhost-user slot directories, sysfs and the
// node policy) and says which pod holds which device and what is stale; Fix repairs what is safe
// to repair.
package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/multinet-io/multinet/deviceplugin"
	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/internal/netnsutil"
	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/podresources"
	"github.com/multinet-io/multinet/sriovcni"
	"github.com/multinet-io/multinet/vfmanager"
)

// Config says where the node's state is. Empty paths are not read.
type Config struct {
	Sys *pci.SysFS
	// SriovStateDir is the sriov plugin's state directory (cmd/ reads MULTINET_STATE_DIR).
	SriovStateDir string
	// DevInfo is the device-info root the sriov plugin writes ("": devinfo.DefaultBase).
	DevInfo devinfo.Dir
	// MetaCacheDir is the meta-plugin's cacheDir (its delegate caches are under delegates/).
	MetaCacheDir string
	// IPAMDirs are host-local dataDirs: <dir>/<network>/<ip> files name their container.
	IPAMDirs []string
	// Checkpoint is kubelet's device-manager checkpoint.
	Checkpoint string
	// PodResourcesSocket is kubelet's PodResources socket: which pod kubelet gave each device,
	// compared with the ownership records. A path that does not exist (no kubelet on this
	// node) is not read.
	PodResourcesSocket string
	// DevicePlugin is the device plugin's config: its vhostUser pools' slots are checked.
	DevicePlugin *deviceplugin.Config
	// Policy is the node policy VFs are checked against (count and driver).
	Policy *vfmanager.Policy
	// VFState reads a VF's admin settings from its PF (nil: through netlink, vfmanager).
	VFState func(pfNetdev string, vf int) (vfmanager.VFState, error)
	// CNIPath is where the sriov plugin's DEL finds the IPAM plugin (Fix).
	CNIPath string
	Log     *slog.Logger
}

// Holding is one device a pod holds.
type Holding struct {
	Kind        string `json:"kind"` // "vf" or "vhost-user"
	Device      string `json:"device"`
	PF          string `json:"pf,omitempty"`
	Pod         string `json:"pod,omitempty"` // namespace/name, from the delegate cache
	PodUID      string `json:"podUID,omitempty"`
	ContainerID string `json:"containerID,omitempty"`
	IfName      string `json:"ifName,omitempty"`
	Netns       string `json:"netns,omitempty"`
	NetnsAlive  bool   `json:"netnsAlive"`
	// Source names the records that say so: owner (sriov ownership record), cache (delegate
	// cache), kubelet (checkpoint), podresources (kubelet's PodResources API), socket (slot
	// directory).
	Source []string `json:"source"`
}

// Finding kinds.
const (
	StaleOwner   = "stale-owner"       // ownership record whose netns is gone
	StaleCache   = "stale-cache"       // delegate cache of a container whose netns is gone
	StaleLease   = "stale-lease"       // IPAM lease of no known container
	VFSettings   = "vf-settings"       // free VF whose admin settings are not its originals
	StaleSlot    = "stale-slot"        // slot socket without a pod
	PolicyDrift  = "policy-drift"      // VFs not as the node policy says
	Quarantined  = "quarantined"       // state file the sriov plugin moved aside
	Problem      = "problem"           // what the sriov plugin could not undo
	Unreadable   = "unreadable-record" // a record doctor cannot parse
	OrphanRecord = "orphan-cache"      // sriov attachment cache without its ownership record
	StaleTemp    = "stale-temp"        // temp file of a record write that never finished
	StaleNetns   = "stale-netns"       // the sriov plugin's temporary netns of a VF nobody owns
	// KubeletMismatch: a live ownership record kubelet disagrees with (the VF is another pod's,
	// or kubelet no longer lists the record's pod).
	KubeletMismatch = "kubelet-mismatch"
)

// tempAge is how old a record's temp file must be to count as left by a dead writer: a live
// write renames it within milliseconds.
var tempAge = time.Minute

// Finding is one thing wrong on the node.
type Finding struct {
	Kind    string `json:"kind"`
	Subject string `json:"subject"` // the file, VF or slot it is about
	Detail  string `json:"detail"`
	// Fix says what Fix does about it; "" when it is left to an operator.
	Fix string `json:"fix,omitempty"`

	apply func(c *Config) error
}

// Report is what Check found.
type Report struct {
	Holdings []Holding `json:"holdings"`
	Findings []Finding `json:"findings"`
}

// OK says whether nothing is wrong.
func (r *Report) OK() bool { return len(r.Findings) == 0 }

// sriovOwner and friends mirror sriovcni's on-disk layout (sriovcni/state.go, type store).
func ownerFiles(dir string) []string { return glob(filepath.Join(dir, "vf", "*.json")) }
func cacheFiles(dir string) []string { return glob(filepath.Join(dir, "cache", "*.json")) }

func glob(p string) []string {
	m, _ := filepath.Glob(p)
	sort.Strings(m)
	return m
}

// metaCache is the part of the meta-plugin's delegate cache doctor reads (meta/cache.go).
type metaCache struct {
	ContainerID  string `json:"containerID"`
	NetNS        string `json:"netns"`
	IfName       string `json:"ifname"`
	PodNamespace string `json:"podNamespace"`
	PodName      string `json:"podName"`
	PodUID       string `json:"podUID"`
	Delegates    []struct {
		Name         string `json:"name"`
		IfName       string `json:"ifname"`
		DeviceID     string `json:"deviceID"`
		ResourceName string `json:"resourceName"`
	} `json:"delegates"`
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// netnsGone: doctor must never call a live pod's state stale (see netnsutil.Gone).
func netnsGone(path string) bool { return netnsutil.Gone(path) }

// Check reads the node's state. Records it cannot read are findings, not errors: one bad file
// must not hide the rest of the node.
func Check(c *Config) (*Report, error) {
	r := &Report{Holdings: []Holding{}, Findings: []Finding{}}
	add := func(f Finding) { r.Findings = append(r.Findings, f) }

	// Meta delegate caches: which pod a container is, and which containers are alive.
	pods := map[string]metaCache{} // containerID -> cache
	alive := map[string]bool{}     // containerID -> its netns exists
	if c.MetaCacheDir != "" {
		for _, path := range glob(filepath.Join(c.MetaCacheDir, "delegates", "*.json")) {
			var m metaCache
			if err := readJSON(path, &m); err != nil {
				add(Finding{Kind: Unreadable, Subject: path, Detail: err.Error(),
					Fix: "none: the container's delegates may still hold addresses; the runtime's DEL cleans up without it"})
				continue
			}
			pods[m.ContainerID] = m
			if netnsGone(m.NetNS) {
				f := Finding{Kind: StaleCache, Subject: path,
					Detail: fmt.Sprintf("container %s (pod %s/%s): netns %s is gone", m.ContainerID, m.PodNamespace, m.PodName, m.NetNS),
					Fix:    "remove the delegate cache once the container's VFs and leases are released"}
				f.apply = func(*Config) error { return removeIfExists(path) }
				add(f)
			} else {
				alive[m.ContainerID] = true
			}
		}
	}

	// The meta-plugin's problem records (<cacheDir>/problems/: what a DEL went past).
	if c.MetaCacheDir != "" {
		for _, path := range glob(filepath.Join(c.MetaCacheDir, "problems", "*.json")) {
			var p struct{ ContainerID, Pod, Network, IfName, Reason, Left string }
			if err := readJSON(path, &p); err != nil {
				add(Finding{Kind: Unreadable, Subject: path, Detail: err.Error()})
				continue
			}
			detail := fmt.Sprintf("container %s (pod %s) network %s on %s: %s", p.ContainerID, p.Pod, p.Network, p.IfName, p.Reason)
			if p.Left != "" {
				detail += "; left: " + p.Left
			}
			add(Finding{Kind: Problem, Subject: path, Detail: detail, Fix: "none: check what it says is left, then remove the record"})
		}
	}

	// kubelet's view: device ID -> pod UIDs.
	var kubelet map[string][]string
	if c.Checkpoint != "" {
		var err error
		if kubelet, err = podresources.DeviceOwners(c.Checkpoint); err != nil && !errors.Is(err, fs.ErrNotExist) {
			add(Finding{Kind: Unreadable, Subject: c.Checkpoint, Detail: err.Error()})
		}
	}

	listing := podResources(c, add)

	// sriov ownership records and attachment caches.
	owned := map[string]bool{}
	caches := map[string]*sriovcni.Cache{} // containerID/ifname -> cache
	if c.SriovStateDir != "" {
		for _, path := range cacheFiles(c.SriovStateDir) {
			var sc sriovcni.Cache
			if err := readJSON(path, &sc); err != nil {
				add(Finding{Kind: Unreadable, Subject: path, Detail: err.Error(), Fix: "none: the sriov plugin quarantines it on the next DEL or GC"})
				continue
			}
			caches[sc.ContainerID+"/"+sc.IfName] = &sc
			if !netnsGone(sc.Netns) {
				alive[sc.ContainerID] = true
			}
		}
		for _, path := range ownerFiles(c.SriovStateDir) {
			var o sriovcni.Owner
			if err := readJSON(path, &o); err != nil {
				add(Finding{Kind: Unreadable, Subject: path, Detail: err.Error(), Fix: "none: the sriov plugin quarantines it on the next ADD of the VF"})
				continue
			}
			vf := strings.TrimSuffix(filepath.Base(path), ".json")
			owned[vf] = true
			sc := caches[o.ContainerID+"/"+o.IfName]
			h := Holding{Kind: "vf", Device: vf, ContainerID: o.ContainerID, IfName: o.IfName, Netns: o.Netns, Source: []string{"owner"}}
			if sc != nil {
				h.PF = sc.PF
			}
			if m, ok := pods[o.ContainerID]; ok {
				h.Pod, h.PodUID = m.PodNamespace+"/"+m.PodName, m.PodUID
				h.Source = append(h.Source, "cache")
			}
			if uids := kubelet[vf]; len(uids) > 0 {
				if h.PodUID == "" {
					h.PodUID = strings.Join(uids, ",")
				}
				h.Source = append(h.Source, "kubelet")
			}
			if h.Pod == "" && sc != nil {
				h.Pod = podFromArgs(sc.CNIArgs)
			}
			if listing != nil && len(listing.Devices[vf]) > 0 {
				h.Source = append(h.Source, "podresources")
			}
			gone := netnsGone(o.Netns)
			h.NetnsAlive = !gone
			r.Holdings = append(r.Holdings, h)
			if !gone {
				if f, ok := kubeletMismatch(h, listing); ok {
					add(f)
				}
				continue
			}
			f := Finding{Kind: StaleOwner, Subject: vf,
				Detail: fmt.Sprintf("held by container %s (%s) whose netns %s is gone", o.ContainerID, o.IfName, o.Netns)}
			if sc != nil {
				f.Fix = fmt.Sprintf("run the sriov plugin's DEL of %s/%s: settings restored, netdev back, lease released", o.ContainerID, o.IfName)
				args := sriovcni.Args{ContainerID: sc.ContainerID, Netns: sc.Netns, IfName: sc.IfName, Args: sc.CNIArgs, StdinData: sc.NetConf}
				f.apply = func(c *Config) error {
					args.Path = c.CNIPath
					p := &sriovcni.Plugin{Sys: c.Sys, StateDir: c.SriovStateDir, DevInfo: c.DevInfo, Log: c.Log}
					return p.Del(args)
				}
			} else {
				f.Fix = "none: no attachment cache to undo from (see the problem records)"
			}
			add(f)
		}
		for key, sc := range caches {
			if o, err := readOwner(c.SriovStateDir, sc.VF); err == nil && (o == nil || o.ContainerID != sc.ContainerID || o.IfName != sc.IfName) {
				add(Finding{Kind: OrphanRecord, Subject: key,
					Detail: fmt.Sprintf("attachment cache for VF %s, which has no ownership record naming it", sc.VF),
					Fix:    "none: the runtime's DEL of the attachment removes it"})
			}
		}
		// A VF's temporary netns outlives a process killed mid-move; the DEL of its owner takes
		// the VF back from it. Without an owner no DEL will.
		for _, path := range glob(filepath.Join(c.SriovStateDir, "netns", "*")) {
			if vf := filepath.Base(path); !owned[vf] {
				add(Finding{Kind: StaleNetns, Subject: vf, Detail: fmt.Sprintf("temporary netns %s of a VF move cut short, and no ownership record: the VF's netdev may be in it", path),
					Fix: "none: ip netns exec it (nsenter --net=" + path + "), move the netdev back, then umount and remove it"})
			}
		}
		for _, path := range glob(filepath.Join(c.SriovStateDir, "quarantine", "*")) {
			add(Finding{Kind: Quarantined, Subject: path, Detail: "a state file the sriov plugin could not read and moved aside",
				Fix: "none: read the matching problem record, then remove the file"})
		}
		for _, path := range glob(filepath.Join(c.SriovStateDir, "problems", "*.json")) {
			var p sriovcni.Problem
			if err := readJSON(path, &p); err != nil {
				add(Finding{Kind: Unreadable, Subject: path, Detail: err.Error()})
				continue
			}
			detail := p.Reason
			if p.Left != "" {
				detail += "; left: " + p.Left
			}
			if p.VF != "" {
				detail = "vf " + p.VF + ": " + detail
			}
			add(Finding{Kind: Problem, Subject: path, Detail: detail, Fix: "none: check what it says is left, then remove the record"})
		}
	}

	// Devices kubelet allocated that no ownership record names (DPDK VFs of pods whose
	// attachment has no CNI step, and vhost-user slots) still belong to a pod.
	slots := vhostSlots(c.DevicePlugin)
	for id, uids := range kubelet {
		if owned[id] {
			continue
		}
		kind := "vf"
		if _, ok := slots[id]; ok {
			kind = "vhost-user"
		} else if c.Sys == nil || !c.Sys.Exists(id) {
			continue
		}
		h := Holding{Kind: kind, Device: id, PodUID: strings.Join(uids, ","), NetnsAlive: true, Source: []string{"kubelet"}}
		if listing != nil && len(listing.Devices[id]) > 0 {
			h.Pod = strings.Join(listing.Devices[id], ",")
			h.Source = append(h.Source, "podresources")
		}
		r.Holdings = append(r.Holdings, h)
	}
	if listing != nil {
		for id, pods := range listing.Devices {
			if owned[id] || len(kubelet[id]) > 0 {
				continue // listed above
			}
			kind := "vf"
			if _, ok := slots[id]; ok {
				kind = "vhost-user"
			} else if c.Sys == nil || !c.Sys.Exists(id) {
				continue
			}
			r.Holdings = append(r.Holdings, Holding{Kind: kind, Device: id, Pod: strings.Join(pods, ","), NetnsAlive: true, Source: []string{"podresources"}})
		}
	}
	for id, sock := range slots {
		if _, err := os.Lstat(sock); err != nil || len(kubelet[id]) > 0 {
			continue
		}
		add(Finding{Kind: StaleSlot, Subject: id, Detail: fmt.Sprintf("socket %s exists but kubelet gave the slot to no pod", sock),
			Fix: "none: the device plugin empties the slot when it next allocates it (a vswitch may still own the socket)"})
	}

	if c.Sys != nil {
		checkVFSettings(c, owned, add)
		if c.Policy != nil {
			m := vfmanager.New(c.Sys)
			changes, err := m.Apply(c.Policy, vfmanager.ApplyOptions{DryRun: true})
			if err != nil {
				add(Finding{Kind: PolicyDrift, Subject: "policy", Detail: err.Error()})
			}
			for _, ch := range changes {
				add(Finding{Kind: PolicyDrift, Subject: "policy", Detail: ch.String(), Fix: "none: run multinetctl vf apply (it may remove VFs pods use)"})
			}
		}
	}

	checkLeases(c, alive, add)
	checkTemps(c, add)
	sort.SliceStable(r.Holdings, func(i, j int) bool { return r.Holdings[i].Device < r.Holdings[j].Device })
	return r, nil
}

// podResources asks kubelet which pod holds which device; nil when it is not asked or cannot
// tell (that is a finding: doctor then cannot compare).
func podResources(c *Config, add func(Finding)) *podresources.Listing {
	if c.PodResourcesSocket == "" {
		return nil
	}
	if _, err := os.Stat(c.PodResourcesSocket); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := podresources.List(ctx, c.PodResourcesSocket)
	if err != nil {
		add(Finding{Kind: Unreadable, Subject: c.PodResourcesSocket, Detail: err.Error(),
			Fix: "none: is kubelet running? the ownership records are not compared with its allocations"})
		return nil
	}
	return l
}

// kubeletMismatch compares a live ownership record with kubelet's allocations: kubelet decides
// which pod a VF belongs to, so a record naming another pod, or a pod kubelet no longer runs,
// means a VF in the wrong place or a DEL that never came.
func kubeletMismatch(h Holding, l *podresources.Listing) (Finding, bool) {
	if l == nil || h.Pod == "" {
		return Finding{}, false
	}
	holders := l.Devices[h.Device]
	switch {
	case len(holders) > 0 && !slices.Contains(holders, h.Pod):
		return Finding{Kind: KubeletMismatch, Subject: h.Device,
			Detail: fmt.Sprintf("recorded for pod %s (container %s, %s) but kubelet allocated it to %s", h.Pod, h.ContainerID, h.IfName, strings.Join(holders, ", ")),
			Fix:    "none: two pods may be using one VF; find which pod has its netdev and delete the other"}, true
	case !l.Pods[h.Pod]:
		return Finding{Kind: KubeletMismatch, Subject: h.Device,
			Detail: fmt.Sprintf("recorded for pod %s (container %s, %s, netns %s still there), which kubelet no longer lists", h.Pod, h.ContainerID, h.IfName, h.Netns),
			Fix:    "none: the runtime never ran the pod's DEL; remove its sandbox (crictl rmp) so the DEL runs"}, true
	}
	return Finding{}, false
}

// podFromArgs is namespace/name from CNI_ARGS ("" when absent).
func podFromArgs(cniArgs string) string {
	var ns, name string
	for _, kv := range strings.Split(cniArgs, ";") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "K8S_POD_NAMESPACE":
			ns = v
		case "K8S_POD_NAME":
			name = v
		}
	}
	if name == "" {
		return ""
	}
	return ns + "/" + name
}

func readOwner(dir, vf string) (*sriovcni.Owner, error) {
	var o sriovcni.Owner
	err := readJSON(filepath.Join(dir, "vf", vf+".json"), &o)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &o, nil
}

// vhostSlots maps each vhost-user slot's device ID to its host socket, laid out as the device
// plugin lays them out.
func vhostSlots(dp *deviceplugin.Config) map[string]string {
	out := map[string]string{}
	if dp == nil {
		return out
	}
	for _, p := range dp.ResourceList {
		v := p.VhostUser
		if p.DeviceType != deviceplugin.TypeVhostUser || v == nil {
			continue
		}
		sock := v.SocketName
		if sock == "" {
			sock = "sock"
		}
		for i := 0; i < v.Count; i++ {
			id := fmt.Sprintf("%s-%d", p.ResourceName, i)
			out[id] = filepath.Join(v.Dir, id, sock)
		}
	}
	return out
}

// freeVF is what a VF nobody set up looks like: no VLAN, no QoS, no rate limits, not trusted.
// A free VF that differs kept a pod's settings.
func differsFromFree(st vfmanager.VFState) []string {
	var d []string
	if st.VLAN != 0 || st.QoS != 0 {
		d = append(d, fmt.Sprintf("vlan %d qos %d", st.VLAN, st.QoS))
	}
	if st.Trust {
		d = append(d, "trust on")
	}
	if st.MinTxRate != 0 || st.MaxTxRate != 0 {
		d = append(d, fmt.Sprintf("tx rate %d-%d", st.MinTxRate, st.MaxTxRate))
	}
	return d
}

func sameAdmin(a, b vfmanager.VFState) bool {
	return a.VLAN == b.VLAN && a.QoS == b.QoS && a.SpoofChk == b.SpoofChk && a.Trust == b.Trust &&
		a.LinkState == b.LinkState && a.MinTxRate == b.MinTxRate && a.MaxTxRate == b.MaxTxRate &&
		(a.MAC == b.MAC || b.MAC == "")
}

// checkVFSettings compares each free VF's admin settings with the originals a quarantined
// ownership record saved for it, else with a free VF's (see differsFromFree).
func checkVFSettings(c *Config, owned map[string]bool, add func(Finding)) {
	read := c.VFState
	if read == nil {
		m := vfmanager.New(c.Sys)
		read = m.ReadVF
	}
	saved := quarantinedOriginals(c.SriovStateDir)
	devs, err := c.Sys.NetDevices()
	if err != nil {
		add(Finding{Kind: Unreadable, Subject: "sysfs", Detail: err.Error()})
		return
	}
	for _, d := range devs {
		if !d.IsVF() || owned[d.Address] {
			continue
		}
		pf, err := c.Sys.Device(d.PFAddress)
		if err != nil || pf.Netdev == "" {
			continue
		}
		st, err := read(pf.Netdev, d.VFIndex)
		if err != nil {
			continue // the PF does not report its VFs: nothing to compare
		}
		vf, index, pfNetdev := d.Address, d.VFIndex, pf.Netdev
		if orig, ok := saved[vf]; ok && !sameAdmin(st, orig) {
			f := Finding{Kind: VFSettings, Subject: vf,
				Detail: fmt.Sprintf("free, but its settings %+v are not the originals %+v its last ownership record saved", st, orig),
				Fix:    "restore the saved original settings (the VF is free)"}
			f.apply = func(*Config) error { return vfmanager.New(c.Sys).RestoreVF(pfNetdev, index, orig) }
			add(f)
		} else if d := differsFromFree(st); !ok && len(d) > 0 {
			reset := st
			reset.VLAN, reset.QoS, reset.Trust, reset.MinTxRate, reset.MaxTxRate = 0, 0, false, 0, 0
			f := Finding{Kind: VFSettings, Subject: vf,
				Detail: fmt.Sprintf("free, but still set up for a pod: %s", strings.Join(d, ", ")),
				Fix:    "reset vlan, qos, trust and rates (the VF is free)"}
			f.apply = func(*Config) error { return vfmanager.New(c.Sys).RestoreVF(pfNetdev, index, reset) }
			add(f)
		}
	}
}

// quarantinedOriginals returns, per VF, the original admin settings of its newest quarantined
// ownership record that can still be read.
func quarantinedOriginals(dir string) map[string]vfmanager.VFState {
	out := map[string]vfmanager.VFState{}
	if dir == "" {
		return out
	}
	for _, path := range glob(filepath.Join(dir, "quarantine", "*.json.*")) {
		var o sriovcni.Owner
		if readJSON(path, &o) != nil || o.Original.Admin == nil {
			continue
		}
		vf := strings.SplitN(filepath.Base(path), ".json.", 2)[0]
		out[vf] = *o.Original.Admin // glob order: later files are newer
	}
	return out
}

// checkLeases reports host-local leases whose container is in no record with a live netns.
func checkLeases(c *Config, alive map[string]bool, add func(Finding)) {
	for _, dir := range c.IPAMDirs {
		for _, path := range glob(filepath.Join(dir, "*", "*")) {
			base := filepath.Base(path)
			if base == "lock" || strings.HasPrefix(base, "last_reserved_ip") {
				continue
			}
			b, err := os.ReadFile(path)
			if err != nil {
				continue
			}
			cid := strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
			if alive[cid] {
				continue
			}
			f := Finding{Kind: StaleLease, Subject: path,
				Detail: fmt.Sprintf("address %s of network %s held by container %s, which no record shows alive", base, filepath.Base(filepath.Dir(path)), cid),
				Fix:    "release the lease (remove the host-local file)"}
			f.apply = func(*Config) error { return removeIfExists(path) }
			add(f)
		}
	}
}

// checkTemps reports the temp files of record writes whose writer died before its rename (a
// plugin SIGKILLed mid-write): the sriov plugin's records, the delegate caches, network-status.
func checkTemps(c *Config, add func(Finding)) {
	var dirs []string
	if c.SriovStateDir != "" {
		dirs = append(dirs, filepath.Join(c.SriovStateDir, "cache"), filepath.Join(c.SriovStateDir, "vf"))
	}
	if c.MetaCacheDir != "" {
		dirs = append(dirs, filepath.Join(c.MetaCacheDir, "delegates"), filepath.Join(c.MetaCacheDir, "status"))
	}
	for _, d := range dirs {
		for _, path := range glob(filepath.Join(d, ".*.tmp-*")) {
			fi, err := os.Lstat(path)
			if err != nil || !fi.Mode().IsRegular() || time.Since(fi.ModTime()) < tempAge {
				continue
			}
			f := Finding{Kind: StaleTemp, Subject: path, Detail: fmt.Sprintf("temp file of a record write that never finished (%s old)", time.Since(fi.ModTime()).Round(time.Second)),
				Fix: "remove it (the record it was to replace is unaffected)"}
			f.apply = func(*Config) error { return removeIfExists(path) }
			add(f)
		}
	}
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// fixOrder runs the sriov DELs first (they release their own leases), then settings, leases
// and caches.
var fixOrder = map[string]int{StaleOwner: 0, VFSettings: 1, StaleLease: 2, StaleCache: 3, StaleTemp: 4}

// Step is one repair Fix made or, in a dry run, would make.
type Step struct {
	Finding Finding `json:"finding"`
	Done    bool    `json:"done"`
	Err     string  `json:"error,omitempty"`
}

// Fix repairs the findings that have a safe repair, in order, logging each step; dryRun only
// lists them. It returns the steps; findings without a repair are left as they are.
func Fix(c *Config, r *Report, dryRun bool) []Step {
	log := c.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	var fs []Finding
	for _, f := range r.Findings {
		if f.apply != nil {
			fs = append(fs, f)
		}
	}
	sort.SliceStable(fs, func(i, j int) bool { return fixOrder[fs[i].Kind] < fixOrder[fs[j].Kind] })
	var steps []Step
	for _, f := range fs {
		s := Step{Finding: f}
		if dryRun {
			log.Info("would fix", "kind", f.Kind, "subject", f.Subject, "fix", f.Fix)
		} else if err := f.apply(c); err != nil {
			s.Err = err.Error()
			log.Error("fix failed", "kind", f.Kind, "subject", f.Subject, "fix", f.Fix, "err", err)
		} else {
			s.Done = true
			log.Info("fixed", "kind", f.Kind, "subject", f.Subject, "fix", f.Fix)
		}
		steps = append(steps, s)
	}
	return steps
}
