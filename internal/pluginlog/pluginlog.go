// Package pluginlog is the log setup of the CNI plugins (multinet, sriov, vhostuser): the
// netconf's logLevel and logFile, with one rule for the file. A netconf is often a tenant's
// NAD and the plugins run as root, so the file may only be under the operator's log dir,
// opened without following links; any other logFile is ignored (logs go to stderr, which the
// runtime keeps) instead of failing the pod's ADD or DEL over a log setting.
package pluginlog

import (
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/multinet-io/multinet/internal/fsutil"
)

// Level maps a netconf's logLevel: debug (or verbose), info, error (or panic); warn otherwise.
func Level(s string) slog.Level {
	switch strings.ToLower(s) {
	case "debug", "verbose":
		return slog.LevelDebug
	case "info":
		return slog.LevelInfo
	case "error", "panic":
		return slog.LevelError
	}
	return slog.LevelWarn
}

// Options describe one plugin's logger.
type Options struct {
	Plugin  string // the "plugin" attribute of every record
	Level   string // the netconf's logLevel
	LogDir  string // the only dir LogFile may be in
	LogFile string // the netconf's logFile ("": stderr)
	JSON    bool   // JSON records (else text)
}

// New returns the logger and what closes its file (nil: it writes to stderr). A refused or
// unopenable LogFile is said first, on stderr.
func New(o Options) (*slog.Logger, io.Closer) {
	var w io.Writer = os.Stderr
	var f *os.File
	var why error
	if o.LogFile != "" {
		if f, why = fsutil.OpenLogFile(o.LogDir, o.LogFile); why == nil {
			w = f
		}
	}
	hopts := &slog.HandlerOptions{Level: Level(o.Level)}
	var h slog.Handler = slog.NewTextHandler(w, hopts)
	if o.JSON {
		h = slog.NewJSONHandler(w, hopts)
	}
	log := slog.New(h).With("plugin", o.Plugin)
	if why != nil {
		log.Warn("logFile ignored, logging to stderr", "err", why.Error())
	}
	if f == nil {
		return log, nil
	}
	return log, f
}
