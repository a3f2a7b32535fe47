package sriovcni

import (
	"os"

	"github.com/multinet-io/multinet/internal/fsutil"
)

// Log files may only be under the log dir: Plugin.LogDir (the binary reads EnvLogDir, set by
// the operator in the runtime's environment, never by a netconf), else DefaultLogDir.
const (
	DefaultLogDir = "/var/log/multinet"
	EnvLogDir     = "MULTINET_LOG_DIR"
)

func (p *Plugin) logDir() string {
	if p.LogDir != "" {
		return p.LogDir
	}
	return DefaultLogDir
}

// openLogFile opens the netconf's logFile (relative to dir or inside it) without following
// symlinks, 0600.
func openLogFile(dir, file string) (*os.File, error) { return fsutil.OpenLogFile(dir, file) }
