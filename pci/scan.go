package pci

import (
	"fmt"
	"os"
	"sort"
	"strings"
)

// Scan reads every function whose PCI class starts with one of classPrefixes ("0x02" network,
// "0x12" accelerators), sorted by address. It is Device for a whole node in one pass: a VF's PF
// and index come from each PF's virtfn links read once, not once per VF, which matters on
// nodes with hundreds of VFs. A device that vanishes while it is read is skipped.
func (s *SysFS) Scan(classPrefixes ...string) ([]Device, error) {
	entries, err := os.ReadDir(s.path("bus", "pci", "devices"))
	if err != nil {
		return nil, fmt.Errorf("list PCI devices under %s: %w", s.Root, err)
	}
	var out []Device
	for _, e := range entries {
		class, err := readTrimmed(s.devPath(e.Name(), "class"))
		if err != nil || !hasPrefix(class, classPrefixes) {
			continue
		}
		d, err := s.deviceOwnFields(e.Name())
		if err != nil {
			if !s.Exists(e.Name()) {
				continue
			}
			return nil, err
		}
		out = append(out, *d)
	}
	type pfIndex struct {
		pf  string
		idx int
	}
	vfOf := map[string]pfIndex{}
	for _, d := range out {
		for i, vf := range d.VFs {
			vfOf[vf] = pfIndex{d.Address, i}
		}
	}
	for i := range out {
		d := &out[i]
		if !s.IsVF(d.Address) {
			continue
		}
		if p, ok := vfOf[d.Address]; ok {
			d.PFAddress, d.VFIndex = p.pf, p.idx
			continue
		}
		// The PF is of a class we were not asked for: ask it directly.
		if d.PFAddress, d.VFIndex, err = s.PFOf(d.Address); err != nil {
			return nil, err
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Address < out[j].Address })
	return out, nil
}

func hasPrefix(s string, prefixes []string) bool {
	if len(prefixes) == 0 {
		return true
	}
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
