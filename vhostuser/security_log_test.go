package vhostuser

import (
	"os"
	"path/filepath"
	"testing"
)

// The vhostuser netconf is a tenant's NAD, and its logFile was opened as root with O_CREATE
// wherever it pointed (following symlinks). Now only a file under the log dir is written, as
// for the sriov and multinet plugins; any other logFile is ignored and logs go to stderr.
func TestSecurityVhostLogFileOnlyUnderLogDir(t *testing.T) {
	dir := t.TempDir()
	logDir := filepath.Join(dir, "log")
	victim := filepath.Join(dir, "nologin")
	p := &Plugin{LogDir: logDir}
	os.MkdirAll(logDir, 0o700)
	os.Symlink(victim, filepath.Join(logDir, "link.log"))
	for _, lf := range []string{victim, "../nologin", "link.log"} {
		log, done := p.logger(&NetConf{LogFile: lf, LogLevel: "debug"})
		log.Info("hello")
		done()
		if _, err := os.Stat(victim); !os.IsNotExist(err) {
			t.Fatalf("logFile %s: %s was written", lf, victim)
		}
	}
	log, done := p.logger(&NetConf{LogFile: "vhostuser.log", LogLevel: "debug"})
	log.Info("hello")
	done()
	st, err := os.Stat(filepath.Join(logDir, "vhostuser.log"))
	if err != nil || st.Mode().Perm() != 0o600 || st.Size() == 0 {
		t.Fatalf("log under the log dir: %v, %v", st, err)
	}
}
