package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/vfmanager"
)

const usage = `usage:
  multinetctl devices [--sysfs-root DIR] [-o table|json]
  multinetctl vf apply -f POLICY.yaml [--sysfs-root DIR] [--dry-run] [--timeout 60s]
  multinetctl dpdk-args [--annotations /etc/podnetinfo/annotations] [--queues N] [--mac] [-o shell|lines|json]
  multinetctl doctor [--sysfs-root DIR] [--state-dir DIR] [--cache-dir DIR] [--ipam-dirs DIR,...]
                     [--checkpoint FILE] [--dp-config FILE] [--policy FILE] [-o table|json]
                     [--fix [--dry-run]] [--cni-path DIR]
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch {
	case args[0] == "devices":
		err = devices(args[1:], stdout)
	case args[0] == "dpdk-args":
		err = dpdkArgs(args[1:], os.Environ(), stdout, stderr)
	case args[0] == "vf" && len(args) > 1 && args[1] == "apply":
		err = vfApply(args[2:], stdout)
	case args[0] == "doctor":
		if err = doctorCmd(args[1:], stdout, stderr); err == errFindings {
			return 1
		}
	case args[0] == "-h" || args[0] == "--help" || args[0] == "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "multinetctl: unknown command %q\n%s", strings.Join(args, " "), usage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "multinetctl: %v\n", err)
		return 1
	}
	return 0
}

func newFlags(name string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	root := fs.String("sysfs-root", pci.DefaultSysfsRoot, "sysfs mount point")
	return fs, root
}

func devices(args []string, stdout io.Writer) error {
	fs, root := newFlags("devices")
	out := fs.String("o", "table", "output format: table or json")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("devices: %w", err)
	}
	if *out != "table" && *out != "json" {
		return fmt.Errorf("devices: -o %q: want table or json", *out)
	}
	devs, err := pci.New(*root).NetDevices()
	if err != nil {
		return err
	}
	pci.FillNames(devs)
	if devs == nil {
		devs = []pci.Device{}
	}
	if *out == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(devs)
	}
	return printTable(stdout, devs)
}

// printTable lists PFs and plain NICs, each PF followed by its VFs, indented.
func printTable(w io.Writer, devs []pci.Device) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDRESS\tVENDOR:DEVICE\tDRIVER\tNETDEV\tNUMA\tIOMMU\tVFS\tNAME")
	byAddr := map[string]pci.Device{}
	for _, d := range devs {
		byAddr[d.Address] = d
	}
	row := func(d pci.Device, indent string) {
		vfs := "-"
		if d.IsPF() {
			vfs = fmt.Sprintf("%d/%d", d.NumVFs, d.TotalVFs)
		}
		addr := indent + d.Address
		if d.IsVF() {
			addr = fmt.Sprintf("%s%s vf%d", indent, d.Address, d.VFIndex)
		}
		fmt.Fprintf(tw, "%s\t%s:%s\t%s\t%s\t%d\t%s\t%s\t%s\n", addr, d.Vendor, d.DeviceID,
			dash(d.Driver), dash(d.Netdev), d.NUMANode, group(d.IOMMUGroup), vfs, dash(strings.TrimSpace(d.VendorName+" "+d.DeviceName)))
	}
	for _, d := range devs {
		if d.IsVF() && byAddr[d.PFAddress].Address != "" {
			continue // printed under its PF
		}
		row(d, "")
		for _, vf := range d.VFs {
			if v, ok := byAddr[vf]; ok {
				row(v, "  ")
			}
		}
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func group(g int) string {
	if g < 0 {
		return "-"
	}
	return fmt.Sprint(g)
}

func vfApply(args []string, stdout io.Writer) error {
	fs, root := newFlags("vf apply")
	file := fs.String("f", "", "node policy file (YAML)")
	dry := fs.Bool("dry-run", false, "print what would change, change nothing")
	timeout := fs.Duration("timeout", vfmanager.DefaultVFWait, "bound on waiting for new VFs")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("vf apply: %w", err)
	}
	if *file == "" {
		return fmt.Errorf("vf apply: -f POLICY.yaml is required")
	}
	data, err := os.ReadFile(*file)
	if err != nil {
		return fmt.Errorf("vf apply: %w", err)
	}
	p, err := vfmanager.ParsePolicy(data)
	if err != nil {
		return fmt.Errorf("%s: %w", *file, err)
	}
	m := vfmanager.New(pci.New(*root))
	start := time.Now()
	changes, err := m.Apply(p, vfmanager.ApplyOptions{DryRun: *dry, VFWait: *timeout})
	verb := "changed"
	if *dry {
		verb = "would change"
	}
	for _, c := range changes {
		fmt.Fprintf(stdout, "%s: %s\n", verb, c)
	}
	if err != nil {
		if len(changes) > 0 {
			return fmt.Errorf("%w (stopped after %d change(s), listed above)", err, len(changes))
		}
		return err
	}
	if len(changes) == 0 {
		fmt.Fprintln(stdout, "no change")
	} else if !*dry {
		fmt.Fprintf(stdout, "applied %d change(s) in %s\n", len(changes), time.Since(start).Round(time.Millisecond))
	}
	return nil
}
