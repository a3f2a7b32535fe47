package benchmarks

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// usageExec runs plugins as a container runtime does (the CNI env and stdin, result on stdout)
// and keeps the kernel's account of each run: peak RSS and CPU time of the plugin process and
// the children it waited for (its delegates).
type usageExec struct {
	mu   sync.Mutex
	runs []procUsage
}

type procUsage struct {
	MaxRSSKB int64
	CPU      time.Duration
}

func (e *usageExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, pluginPath)
	cmd.Env, cmd.Stdin, cmd.Stdout, cmd.Stderr = environ, bytes.NewReader(stdin), &stdout, &stderr
	err := cmd.Run()
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			e.mu.Lock()
			e.runs = append(e.runs, procUsage{MaxRSSKB: ru.Maxrss,
				CPU: time.Duration(ru.Utime.Nano() + ru.Stime.Nano())})
			e.mu.Unlock()
		}
	}
	if err != nil {
		// A CNI error is JSON on stdout; anything else is in stderr.
		var cniErr types.Error
		if json.Unmarshal(stdout.Bytes(), &cniErr) == nil && cniErr.Msg != "" {
			return nil, &cniErr
		}
		return nil, fmt.Errorf("%s: %w: %s%s", pluginPath, err, strings.TrimSpace(stdout.String()), strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

func (e *usageExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

func (e *usageExec) Decode(b []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(b)
}

func (e *usageExec) last() procUsage {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.runs) == 0 {
		return procUsage{}
	}
	return e.runs[len(e.runs)-1]
}
