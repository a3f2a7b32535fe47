package sriovcni

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

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
	if command == "ADD" {
		r, err := invoke.ExecPluginWithResult(ctx, path, netconf, args, nil)
		if err != nil {
			return nil, fmt.Errorf("ipam %s %s: %w", plugin, command, err)
		}
		return r, nil
	}
	if err := invoke.ExecPluginWithoutResult(ctx, path, netconf, args, nil); err != nil {
		return nil, fmt.Errorf("ipam %s %s: %w", plugin, command, err)
	}
	return nil, nil
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
