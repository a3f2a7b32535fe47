package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/multinet-io/multinet/cmd/internal/nodeenv"
	"github.com/multinet-io/multinet/deviceplugin"
	"github.com/multinet-io/multinet/doctor"
	"github.com/multinet-io/multinet/meta"
	"github.com/multinet-io/multinet/pci"
	"github.com/multinet-io/multinet/podresources"
	"github.com/multinet-io/multinet/vfmanager"
)

// errFindings makes the exit code say that doctor found something wrong (1) without an error
// message of its own: the report already says what.
var errFindings = fmt.Errorf("findings")

// doctorCmd prints which pod holds which device and what is stale; with --fix it repairs what
// is safe to repair, after showing the plan (--dry-run: the plan only).
func doctorCmd(args []string, stdout, stderr io.Writer) error {
	fs, root := newFlags("doctor")
	out := fs.String("o", "table", "output format: table or json")
	stateDir := fs.String("state-dir", nodeenv.SriovStateDir(), "the sriov plugin's state directory")
	cacheDir := fs.String("cache-dir", meta.DefaultCacheDir, "the meta-plugin's cacheDir")
	ipam := fs.String("ipam-dirs", "/var/lib/cni/networks", "host-local dataDirs of the networks multinet attaches, comma-separated")
	checkpoint := fs.String("checkpoint", podresources.DefaultCheckpoint, "kubelet's device-manager checkpoint")
	podRes := fs.String("pod-resources-socket", podresources.DefaultSocket, "kubelet's PodResources socket: its allocations are compared with the ownership records (absent: not read)")
	dpConfig := fs.String("dp-config", "", "the device plugin's config (its vhostUser slots are checked)")
	policy := fs.String("policy", "", "node policy (YAML) the VFs are checked against")
	cniPath := fs.String("cni-path", "/opt/cni/bin", "CNI plugin dir (IPAM plugins for the repairs' DELs)")
	fix := fs.Bool("fix", false, "repair what is safe to repair (the plan is shown first)")
	dry := fs.Bool("dry-run", false, "with --fix: show the plan, change nothing")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("doctor: %w", err)
	}
	if *out != "table" && *out != "json" {
		return fmt.Errorf("doctor: -o %q: want table or json", *out)
	}
	c := &doctor.Config{Sys: pci.New(*root), SriovStateDir: *stateDir, DevInfo: nodeenv.DevInfo(), MetaCacheDir: *cacheDir, Checkpoint: *checkpoint,
		PodResourcesSocket: *podRes, CNIPath: *cniPath, Log: slog.New(slog.NewTextHandler(stderr, nil))}
	for _, d := range strings.Split(*ipam, ",") {
		if d = strings.TrimSpace(d); d != "" {
			c.IPAMDirs = append(c.IPAMDirs, d)
		}
	}
	if *dpConfig != "" {
		b, err := os.ReadFile(*dpConfig)
		if err != nil {
			return fmt.Errorf("doctor: %w", err)
		}
		if c.DevicePlugin, err = deviceplugin.Parse(b); err != nil {
			return fmt.Errorf("doctor: %s: %w", *dpConfig, err)
		}
	}
	if *policy != "" {
		b, err := os.ReadFile(*policy)
		if err != nil {
			return fmt.Errorf("doctor: %w", err)
		}
		if c.Policy, err = vfmanager.ParsePolicy(b); err != nil {
			return fmt.Errorf("doctor: %s: %w", *policy, err)
		}
	}
	r, err := doctor.Check(c)
	if err != nil {
		return fmt.Errorf("doctor: %w", err)
	}
	var steps []doctor.Step
	if *fix {
		steps = doctor.Fix(c, r, true) // the plan, logged, before anything changes
		if !*dry {
			steps = doctor.Fix(c, r, false)
			// What is left after the repairs is what the exit code reports.
			if r, err = doctor.Check(c); err != nil {
				return fmt.Errorf("doctor: %w", err)
			}
		}
	}
	if *out == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(struct {
			*doctor.Report
			Fixes []doctor.Step `json:"fixes,omitempty"`
		}{r, steps}); err != nil {
			return err
		}
	} else if err := printDoctor(stdout, r, steps); err != nil {
		return err
	}
	if !r.OK() {
		return errFindings
	}
	return nil
}

func printDoctor(w io.Writer, r *doctor.Report, steps []doctor.Step) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tDEVICE\tPF\tPOD\tPOD UID\tCONTAINER\tIFNAME\tNETNS\tSOURCE")
	for _, h := range r.Holdings {
		netns := dash(h.Netns)
		if !h.NetnsAlive {
			netns += " (gone)"
		}
		cid := h.ContainerID
		if len(cid) > 12 {
			cid = cid[:12]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Kind, h.Device, dash(h.PF), dash(h.Pod), dash(h.PodUID),
			dash(cid), dash(h.IfName), netns, strings.Join(h.Source, ","))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range steps {
		state := "would fix"
		if s.Done {
			state = "fixed"
		} else if s.Err != "" {
			state = "FAILED (" + s.Err + ")"
		}
		fmt.Fprintf(w, "%s: %s %s: %s\n", state, s.Finding.Kind, s.Finding.Subject, s.Finding.Fix)
	}
	if r.OK() {
		fmt.Fprintln(w, "nothing stale")
		return nil
	}
	fmt.Fprintf(w, "%d finding(s):\n", len(r.Findings))
	for _, f := range r.Findings {
		fix := f.Fix
		if fix == "" {
			fix = "none"
		}
		fmt.Fprintf(w, "  %s %s: %s (fix: %s)\n", f.Kind, f.Subject, f.Detail, fix)
	}
	return nil
}
