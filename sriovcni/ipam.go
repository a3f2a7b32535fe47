package sriovcni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// execIPAM runs the IPAM plugin with the attachment's arguments passed explicitly, not taken
// from the process environment as pkg/ipam.ExecAdd does (it also sets CNI_COMMAND process-wide):
// a daemon serves many attachments at once in one process.
func execIPAM(ctx context.Context, command, plugin string, a Args, netconf []byte) (types.Result, error) {
	path, err := invoke.FindInPath(plugin, filepath.SplitList(a.Path))
	if err != nil {
		return nil, fmt.Errorf("ipam %s: %w (CNI_PATH %q)", plugin, err, a.Path)
	}
	args := &invoke.Args{Command: command, ContainerID: a.ContainerID, NetNS: a.Netns,
		IfName: a.IfName, PluginArgsStr: a.Args, Path: a.Path}
	run := func(conf []byte) (types.Result, error) {
		if command == "ADD" {
			return invoke.ExecPluginWithResult(ctx, path, conf, args, nil)
		}
		return nil, invoke.ExecPluginWithoutResult(ctx, path, conf, args, nil)
	}
	r, err := run(netconf)
	var te *types.Error
	if errors.As(err, &te) && te.Code == types.ErrIncompatibleCNIVersion {
		// An older IPAM binary (Debian bookworm's host-local speaks up to 1.0.0) under a newer
		// netconf: ask it again at the newest version it supports. Its result converts up.
		if older, ok := downgradeConf(ctx, path, netconf); ok {
			r, err = run(older)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("ipam %s %s: %w", plugin, command, err)
	}
	return r, nil
}

// downgradeConf rewrites the netconf's cniVersion to the newest one the plugin supports below
// it; false when there is none.
func downgradeConf(ctx context.Context, path string, netconf []byte) ([]byte, bool) {
	var m map[string]any
	if json.Unmarshal(netconf, &m) != nil {
		return nil, false
	}
	cur, _ := m["cniVersion"].(string)
	info, err := invoke.GetVersionInfo(ctx, path, nil)
	if err != nil || cur == "" {
		return nil, false
	}
	best := ""
	for _, v := range info.SupportedVersions() {
		below, err1 := version.GreaterThan(cur, v)
		newer, err2 := version.GreaterThan(v, orZero(best))
		if err1 == nil && err2 == nil && below && (best == "" || newer) {
			best = v
		}
	}
	if best == "" {
		return nil, false
	}
	m["cniVersion"] = best
	b, err := json.Marshal(m)
	return b, err == nil
}

func orZero(v string) string {
	if v == "" {
		return "0.0.0"
	}
	return v
}

// ipamAdd allocates addresses and returns them as a current result.
func ipamAdd(ctx context.Context, c *NetConf, a Args, netconf []byte) (*current.Result, error) {
	r, err := execIPAM(ctx, "ADD", c.IPAM.Type, a, netconf)
	if err != nil {
		return nil, err
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		return nil, fmt.Errorf("ipam %s: convert result: %w", c.IPAM.Type, err)
	}
	if len(res.IPs) == 0 {
		return nil, fmt.Errorf("ipam %s: returned no IP addresses", c.IPAM.Type)
	}
	return res, nil
}
