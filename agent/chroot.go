package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// chrootExec execs delegate plugins chrooted to root, the host's / mounted in the agent's pod:
// the node's plugins (Debian's are dynamically linked) then find the host's libc, and every
// path a runtime hands them (CNI_PATH, CNI_NETNS, the IPAM data dirs) means what it means on
// the host. Plugin paths are host paths: looked up under root, exec'd as they are inside it.
type chrootExec struct {
	root   string
	stderr io.Writer
}

var _ invoke.Exec = (*chrootExec)(nil)

func (e *chrootExec) FindInPath(plugin string, paths []string) (string, error) {
	if plugin == "" || strings.ContainsRune(plugin, os.PathSeparator) {
		return "", fmt.Errorf("invalid plugin name %q", plugin)
	}
	for _, p := range paths {
		hp := filepath.Join(p, plugin)
		full := filepath.Join(e.root, hp)
		if st, err := os.Stat(full); err == nil && st.Mode().IsRegular() {
			return hp, nil
		}
		// A host symlink to an absolute path resolves only inside the chroot: exec will tell.
		if st, err := os.Lstat(full); err == nil && st.Mode()&os.ModeSymlink != 0 {
			return hp, nil
		}
	}
	return "", fmt.Errorf("failed to find plugin %q in path %s (under delegate chroot %s)", plugin, paths, e.root)
}

func (e *chrootExec) Decode(b []byte) (version.PluginInfo, error) {
	var d version.PluginDecoder
	return d.Decode(b)
}

// ExecPlugin runs the plugin as invoke's RawExec does (same stdout/stderr handling and error
// decoding, a "text file busy" retried), inside the chroot with / as its working dir.
func (e *chrootExec) ExecPlugin(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	var err error
	for i := 0; i <= 5; i++ {
		stdout.Reset()
		stderr.Reset()
		c := exec.CommandContext(ctx, path)
		c.Env, c.Dir = environ, "/"
		c.Stdin, c.Stdout, c.Stderr = bytes.NewReader(stdin), &stdout, &stderr
		c.SysProcAttr = &syscall.SysProcAttr{Chroot: e.root}
		if err = c.Run(); err == nil || !strings.Contains(err.Error(), "text file busy") {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	if err != nil {
		return nil, pluginErr(path, err, stdout.Bytes(), stderr.Bytes())
	}
	if e.stderr != nil && stderr.Len() > 0 {
		_, _ = stderr.WriteTo(e.stderr)
	}
	return stdout.Bytes(), nil
}

// pluginErr is the plugin's CNI error from its stdout, or one built from its stderr.
func pluginErr(path string, err error, stdout, stderr []byte) error {
	var te types.Error
	switch {
	case len(stdout) > 0:
		if perr := json.Unmarshal(stdout, &te); perr != nil {
			te = types.Error{Code: types.ErrInternal, Msg: fmt.Sprintf("netplugin %s failed but error parsing its diagnostic message %q: %v", path, stdout, perr)}
		}
	case len(stderr) > 0:
		te.Msg = fmt.Sprintf("netplugin %s failed: %q: %v", path, stderr, err)
	default:
		te.Msg = fmt.Sprintf("netplugin %s failed with no error message: %v", path, err)
	}
	return &te
}
