package vfmanager

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/multinet-io/multinet/pci"
)

// Policy is the node's desired SR-IOV layout, as an operator writes it:
//
//	pfs:
//	- pf: ens1f0            # netdev name or PCI address
//	  numVfs: 4
//	  mtu: 9000             # optional, PF netdev MTU
//	  groups:
//	  - vfs: "0-1"
//	    driver: netdev      # the VF's kernel driver (default for VFs in no group)
//	  - vfs: "2-3"
//	    driver: vfio-pci    # for DPDK
type Policy struct {
	PFs []PFPolicy `json:"pfs"`
}

// PFPolicy is the desired state of one PF.
type PFPolicy struct {
	PF     string    `json:"pf"`
	NumVFs int       `json:"numVfs"`
	MTU    int       `json:"mtu,omitempty"`
	Groups []VFGroup `json:"groups,omitempty"`
}

// VFGroup binds a range of VF indexes to a driver.
type VFGroup struct {
	VFs    string `json:"vfs"`
	Driver string `json:"driver"`
}

// Driver kinds a group may ask for.
const (
	DriverNetdev = "netdev"
	DriverVFIO   = pci.DriverVFIO
)

// ParsePolicy reads a policy strictly: unknown fields are errors, so a typo never silently
// turns into "leave as is".
func ParsePolicy(data []byte) (*Policy, error) {
	var p Policy
	if err := yaml.UnmarshalStrict(data, &p); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if len(p.PFs) == 0 {
		return nil, errors.New("policy: no pfs listed")
	}
	for i, pf := range p.PFs {
		if pf.PF == "" {
			return nil, fmt.Errorf("policy: pfs[%d]: pf (netdev name or PCI address) is required", i)
		}
		if pf.NumVFs < 0 {
			return nil, fmt.Errorf("policy: pf %s: numVfs %d is negative", pf.PF, pf.NumVFs)
		}
		if pf.MTU < 0 || pf.MTU > 65535 {
			return nil, fmt.Errorf("policy: pf %s: mtu %d out of range", pf.PF, pf.MTU)
		}
		for _, g := range pf.Groups {
			if g.Driver != DriverNetdev && g.Driver != DriverVFIO {
				return nil, fmt.Errorf("policy: pf %s: vfs %q: unknown driver %q (want netdev or vfio-pci)", pf.PF, g.VFs, g.Driver)
			}
			if _, _, err := ParseRange(g.VFs); err != nil {
				return nil, fmt.Errorf("policy: pf %s: %w", pf.PF, err)
			}
		}
	}
	return &p, nil
}

// ParseRange parses "3" or "0-3" into inclusive bounds.
func ParseRange(s string) (int, int, error) {
	lo, hi, isRange := strings.Cut(strings.TrimSpace(s), "-")
	a, err := strconv.Atoi(strings.TrimSpace(lo))
	if err != nil || a < 0 {
		return 0, 0, fmt.Errorf("vf range %q: want N or N-M with N <= M", s)
	}
	if !isRange {
		return a, a, nil
	}
	b, err := strconv.Atoi(strings.TrimSpace(hi))
	if err != nil || b < a {
		return 0, 0, fmt.Errorf("vf range %q: want N or N-M with N <= M", s)
	}
	return a, b, nil
}

// Change is one thing Apply did (or, in a dry run, would do).
type Change struct {
	PF   string `json:"pf"`
	What string `json:"what"`
	From string `json:"from"`
	To   string `json:"to"`
}

func (c Change) String() string {
	return fmt.Sprintf("pf %s: %s %s -> %s", c.PF, c.What, c.From, c.To)
}

// resolved is a PF policy checked against the host.
type resolved struct {
	PFPolicy
	addr    string
	netdev  string
	drivers []string // desired driver per VF index
}

// resolve checks the whole policy against the host before anything is changed.
func (m *Manager) resolve(p *Policy) ([]resolved, error) {
	var out []resolved
	seen := map[string]string{}
	for _, pp := range p.PFs {
		addr := pp.PF
		if !pci.ValidAddress(addr) {
			a, err := m.Sys.ByNetdev(pp.PF)
			if err != nil {
				return nil, fmt.Errorf("policy: unknown pf %q: no PCI device has that address or netdev", pp.PF)
			}
			addr = a
		}
		d, err := m.Sys.Device(addr)
		if err != nil {
			return nil, fmt.Errorf("policy: unknown pf %q: %w", pp.PF, err)
		}
		if prev, dup := seen[addr]; dup {
			return nil, fmt.Errorf("policy: pf %s listed twice (%q and %q)", addr, prev, pp.PF)
		}
		seen[addr] = pp.PF
		if d.TotalVFs == 0 {
			return nil, fmt.Errorf("policy: pf %s (%s): not SR-IOV capable", pp.PF, addr)
		}
		if pp.NumVFs > d.TotalVFs {
			return nil, fmt.Errorf("policy: pf %s: numVfs %d beyond sriov_totalvfs %d", pp.PF, pp.NumVFs, d.TotalVFs)
		}
		r := resolved{PFPolicy: pp, addr: addr, netdev: d.Netdev, drivers: make([]string, pp.NumVFs)}
		for i := range r.drivers {
			r.drivers[i] = DriverNetdev
		}
		owner := map[int]string{}
		for _, g := range pp.Groups {
			lo, hi, _ := ParseRange(g.VFs)
			if hi >= pp.NumVFs {
				return nil, fmt.Errorf("policy: pf %s: vfs %q beyond numVfs %d (sriov_totalvfs %d)", pp.PF, g.VFs, pp.NumVFs, d.TotalVFs)
			}
			for i := lo; i <= hi; i++ {
				if o, taken := owner[i]; taken {
					return nil, fmt.Errorf("policy: pf %s: vf %d in two groups (%q and %q)", pp.PF, i, o, g.VFs)
				}
				owner[i] = g.VFs
				r.drivers[i] = g.Driver
			}
			if g.Driver == DriverVFIO && !m.Sys.DriverLoaded(DriverVFIO) {
				return nil, fmt.Errorf("policy: pf %s: vfs %q want vfio-pci, but the vfio-pci driver is not loaded (modprobe vfio-pci)", pp.PF, g.VFs)
			}
		}
		if pp.MTU > 0 && d.Netdev == "" {
			return nil, fmt.Errorf("policy: pf %s: mtu %d set but the PF has no netdev", pp.PF, pp.MTU)
		}
		out = append(out, r)
	}
	return out, nil
}

// ApplyOptions tunes Apply.
type ApplyOptions struct {
	DryRun bool
	VFWait time.Duration // bound on VF creation; DefaultVFWait when zero
}

// Apply reconciles the host with the policy. The whole policy is validated first; nothing is
// changed when it is wrong. A second Apply of the same policy returns no changes. On a failure
// part-way, the changes already made are returned with the error.
func (m *Manager) Apply(p *Policy, opt ApplyOptions) ([]Change, error) {
	rs, err := m.resolve(p)
	if err != nil {
		return nil, err
	}
	var done []Change
	for _, r := range rs {
		ch, err := m.applyPF(r, opt)
		done = append(done, ch...)
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

func (m *Manager) applyPF(r resolved, opt ApplyOptions) ([]Change, error) {
	var done []Change
	label := r.addr
	if r.netdev != "" {
		label = fmt.Sprintf("%s (%s)", r.addr, r.netdev)
	}
	if r.MTU > 0 {
		link, err := m.nl().LinkByName(r.netdev)
		if err != nil {
			return done, fmt.Errorf("pf %s: %w", label, err)
		}
		if cur := link.Attrs().MTU; cur != r.MTU {
			if !opt.DryRun {
				if err := m.nl().LinkSetMTU(link, r.MTU); err != nil {
					return done, fmt.Errorf("pf %s: set mtu %d: %w", label, r.MTU, err)
				}
			}
			done = append(done, Change{label, "mtu", strconv.Itoa(cur), strconv.Itoa(r.MTU)})
		}
	}
	d, err := m.Sys.Device(r.addr)
	if err != nil {
		return done, err
	}
	if d.NumVFs != r.NumVFs {
		if !opt.DryRun {
			if err := m.SetNumVFs(r.addr, r.NumVFs, opt.VFWait); err != nil {
				return done, err
			}
		}
		done = append(done, Change{label, "numVfs", strconv.Itoa(d.NumVFs), strconv.Itoa(r.NumVFs)})
	}
	var vfs []string
	if !opt.DryRun || d.NumVFs == r.NumVFs {
		if vfs, err = m.Sys.VFs(r.addr); err != nil {
			return done, err
		}
	}
	for i, want := range r.drivers {
		addr, cur := "", ""
		if i < len(vfs) {
			addr = vfs[i]
			if cur, err = m.Sys.Driver(addr); err != nil {
				return done, err
			}
		}
		vfLabel := fmt.Sprintf("vf %d (%s) driver", i, orDefault(addr, "new"))
		switch {
		case want == DriverVFIO && cur != DriverVFIO:
			if !opt.DryRun {
				if err := m.Sys.Bind(addr, DriverVFIO); err != nil {
					return done, fmt.Errorf("pf %s vf %d: %w", label, i, err)
				}
			}
			done = append(done, Change{label, vfLabel, orDefault(cur, "netdev"), DriverVFIO})
		case want == DriverNetdev && (cur == DriverVFIO || (cur == "" && addr != "")):
			if !opt.DryRun {
				if err := m.Sys.BindDefault(addr); err != nil {
					return done, fmt.Errorf("pf %s vf %d: %w", label, i, err)
				}
			}
			now, _ := m.Sys.Driver(addr)
			done = append(done, Change{label, vfLabel, orDefault(cur, "(none)"), orDefault(now, DriverNetdev)})
		}
	}
	return done, nil
}
