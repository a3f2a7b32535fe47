package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/multinet-io/multinet/sriovcni"
)

// inProcessPrefix names a plugin served in-process when its binary is not installed: libcni
// looks every plugin up before it runs it.
const inProcessPrefix = "/proc/multinetd/in-process/"

// execer is the meta-plugin's Exec seam in the agent: the sriov delegate runs in-process
// through package sriovcni (same code, state and results as the binary), every other plugin is
// exec'd. Each call is timed per plugin type.
type execer struct {
	raw     invoke.Exec
	sriov   *sriovcni.Plugin // nil: exec the sriov binary too
	metrics *metrics
}

func (e *execer) inProcess(path string) bool {
	return e.sriov != nil && filepath.Base(path) == "sriov"
}

func (e *execer) FindInPath(plugin string, paths []string) (string, error) {
	p, err := e.raw.FindInPath(plugin, paths)
	if err != nil && e.sriov != nil && plugin == "sriov" {
		return inProcessPrefix + plugin, nil
	}
	return p, err
}

func (e *execer) Decode(b []byte) (version.PluginInfo, error) { return e.raw.Decode(b) }

func (e *execer) ExecPlugin(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	start := time.Now()
	inProc := e.inProcess(path)
	var out []byte
	var err error
	if inProc {
		out, err = e.runSriov(ctx, env, stdin)
	} else {
		out, err = e.raw.ExecPlugin(ctx, path, stdin, environ)
	}
	e.metrics.delegate.WithLabelValues(filepath.Base(path), env["CNI_COMMAND"], fmt.Sprint(inProc)).Observe(time.Since(start).Seconds())
	return out, err
}

// runSriov is the sriov binary's main in-process: what it would print, or the error it would
// print, as invoke's RawExec returns them.
func (e *execer) runSriov(ctx context.Context, env map[string]string, stdin []byte) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, &types.Error{Code: types.ErrInternal, Msg: fmt.Sprintf("sriov (in multinetd): internal error: %v", r)}
		}
	}()
	a := sriovcni.Args{ContainerID: env["CNI_CONTAINERID"], Netns: env["CNI_NETNS"], IfName: env["CNI_IFNAME"],
		Args: env["CNI_ARGS"], Path: env["CNI_PATH"], StdinData: stdin}
	switch cmd := env["CNI_COMMAND"]; cmd {
	case "ADD":
		res, aerr := e.sriov.AddContext(ctx, a)
		if aerr != nil {
			return nil, asCNIError(aerr)
		}
		var v struct {
			CNIVersion string `json:"cniVersion"`
		}
		_ = json.Unmarshal(stdin, &v) // Add parsed it already
		conv, cerr := res.GetAsVersion(v.CNIVersion)
		if cerr != nil {
			return nil, asCNIError(cerr)
		}
		var buf bytes.Buffer
		if perr := conv.PrintTo(&buf); perr != nil {
			return nil, asCNIError(perr)
		}
		return buf.Bytes(), nil
	case "DEL":
		return nil, asCNIError(e.sriov.DelContext(ctx, a))
	case "CHECK":
		return nil, asCNIError(e.sriov.CheckContext(ctx, a))
	case "GC":
		return nil, asCNIError(e.sriov.GCContext(ctx, a))
	case "STATUS":
		return nil, asCNIError(e.sriov.Status(a))
	case "VERSION":
		var buf bytes.Buffer
		if verr := version.All.Encode(&buf); verr != nil {
			return nil, asCNIError(verr)
		}
		return buf.Bytes(), nil
	default:
		return nil, &types.Error{Code: types.ErrInvalidEnvironmentVariables, Msg: fmt.Sprintf("sriov: unknown CNI_COMMAND %q", cmd)}
	}
}

// asCNIError is the error as the binary reports it: a *types.Error is kept, anything else is
// code 999 with its message (skel does the same).
func asCNIError(err error) error {
	if err == nil {
		return nil
	}
	var te *types.Error
	if errors.As(err, &te) && error(te) == err {
		return te
	}
	code := uint(types.ErrInternal)
	if errors.As(err, &te) {
		code = te.Code
	}
	return &types.Error{Code: code, Msg: err.Error()}
}
