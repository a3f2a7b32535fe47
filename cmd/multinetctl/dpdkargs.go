package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/multinet-io/multinet/dpdk"
	"github.com/multinet-io/multinet/pci"
)

// dpdkArgs prints the EAL arguments for what multinet gave this pod. It runs inside the pod:
// the network-status annotation comes through the downward-API file, the devices through the
// device plugin's environment.
func dpdkArgs(args []string, env []string, stdout, stderr io.Writer) error {
	fset, root := newFlags("dpdk-args")
	annot := fset.String("annotations", dpdk.DefaultAnnotationsFile, "downward-API annotations file carrying network-status")
	queues := fset.Int("queues", 0, "queues=N on each vhost-user port (0: DPDK's default)")
	mac := fset.Bool("mac", false, "pass each vhost-user network's MAC from network-status as mac=")
	out := fset.String("o", "shell", "output: shell (one line), lines (one argument a line) or json")
	if err := fset.Parse(args); err != nil {
		return fmt.Errorf("dpdk-args: %w", err)
	}
	if *out != "shell" && *out != "lines" && *out != "json" {
		return fmt.Errorf("dpdk-args: -o %q: want shell, lines or json", *out)
	}
	if *queues < 0 || *queues > 128 {
		return fmt.Errorf("dpdk-args: --queues %d: want 0-128", *queues)
	}
	explicit := false
	fset.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "annotations" })

	var status []dpdk.Device
	data, err := os.ReadFile(*annot)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !explicit:
		fmt.Fprintf(stderr, "multinetctl dpdk-args: no %s (downward API not mounted): devices from the environment only, in variable order\n", *annot)
	case err != nil:
		return fmt.Errorf("dpdk-args: %w", err)
	default:
		a, err := dpdk.ParseAnnotations(data)
		if err != nil {
			return fmt.Errorf("dpdk-args: %s: %w", *annot, err)
		}
		if s, ok := a[dpdk.NetworkStatusAnnot]; ok {
			if status, err = dpdk.FromNetworkStatus([]byte(s)); err != nil {
				return fmt.Errorf("dpdk-args: %s: %w", *annot, err)
			}
		} else {
			fmt.Fprintf(stderr, "multinetctl dpdk-args: %s has no %s annotation: devices from the environment only\n", *annot, dpdk.NetworkStatusAnnot)
		}
	}
	envDevs, err := dpdk.ParseEnv(env)
	if err != nil {
		return fmt.Errorf("dpdk-args: %w", err)
	}
	sys := pci.New(*root)
	devs, skipped := dpdk.Plan(status, envDevs, func(addr string) string {
		d, _ := sys.Driver(addr)
		return d
	})
	for _, s := range skipped {
		fmt.Fprintf(stderr, "multinetctl dpdk-args: skipped %s\n", s)
	}
	if len(devs) == 0 {
		return errors.New("dpdk-args: the pod has no DPDK device (no vfio-pci VF or vhost-user slot in network-status or PCIDEVICE_*/VHOSTUSER_* env)")
	}
	eal := dpdk.EALArgs(devs, dpdk.Options{Queues: *queues, MAC: *mac})
	switch *out {
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Devices []dpdk.Device `json:"devices"`
			Args    []string      `json:"args"`
		}{devs, eal})
	case "lines":
		for _, a := range eal {
			fmt.Fprintln(stdout, a)
		}
	default:
		q := make([]string, len(eal))
		for i, a := range eal {
			q[i] = shellQuote(a)
		}
		fmt.Fprintln(stdout, strings.Join(q, " "))
	}
	return nil
}

// shellQuote leaves plain words alone and single-quotes the rest.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=,./:") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
