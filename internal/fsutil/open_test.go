package fsutil

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A log path whose file or any directory below the log dir is a symlink is refused: nothing is
// written to the link's target (as root, a link to /etc/nologin would lock out logins).
func TestSecurityOpenAppendInDirRefusesSymlinks(t *testing.T) {
	dir := t.TempDir()
	logDir := filepath.Join(dir, "log")
	target := filepath.Join(dir, "nologin")
	os.MkdirAll(logDir, 0o700)
	os.Symlink(target, filepath.Join(logDir, "multinet.log"))
	os.Symlink(dir, filepath.Join(logDir, "sub"))
	for _, rel := range []string{"multinet.log", "sub/nologin", "sub/new.log"} {
		f, err := OpenAppendInDir(logDir, rel)
		if err == nil {
			f.Close()
			t.Errorf("%s: opened through a symlink", rel)
		}
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Errorf("symlink target %s was created", target)
	}
	if _, err := os.Stat(filepath.Join(dir, "new.log")); !os.IsNotExist(err) {
		t.Errorf("file created through the symlinked directory")
	}
	for _, rel := range []string{"../escape.log", "/etc/nologin", ".."} {
		if f, err := OpenAppendInDir(logDir, rel); err == nil {
			f.Close()
			t.Errorf("%s: opened outside the log dir", rel)
		}
	}
}

// The file is created 0600 (missing directories 0700), a wider mode is narrowed, and a
// hard link to another file is refused.
func TestSecurityOpenAppendInDirModes(t *testing.T) {
	logDir := filepath.Join(t.TempDir(), "log")
	f, err := OpenAppendInDir(logDir, "a/b/multinet.log")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("one\n")
	f.Close()
	path := filepath.Join(logDir, "a/b/multinet.log")
	os.Chmod(path, 0o666)
	f, err = OpenAppendInDir(logDir, "a/b/multinet.log")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("two\n")
	f.Close()
	if b, _ := os.ReadFile(path); string(b) != "one\ntwo\n" {
		t.Errorf("content = %q, want both lines appended", b)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", st.Mode().Perm())
	}
	if st, _ := os.Stat(filepath.Join(logDir, "a")); st.Mode().Perm() != 0o700 {
		t.Errorf("dir mode = %v, want 0700", st.Mode().Perm())
	}
	other := filepath.Join(t.TempDir(), "shadow")
	os.WriteFile(other, []byte("secret"), 0o600)
	if err := os.Link(other, filepath.Join(logDir, "linked.log")); err != nil {
		t.Skipf("hard link: %v", err)
	}
	if f, err := OpenAppendInDir(logDir, "linked.log"); err == nil || !strings.Contains(err.Error(), "hard links") {
		if f != nil {
			f.Close()
		}
		t.Errorf("hard-linked file: err = %v, want refused", err)
	}
}

func TestSecurityOpenLogFileOnlyInsideDir(t *testing.T) {
	dir := t.TempDir()
	logDir := filepath.Join(dir, "log")
	for _, file := range []string{filepath.Join(dir, "x.log"), logDir + "/../x.log", "../x.log", logDir, "/etc/nologin"} {
		if f, err := OpenLogFile(logDir, file); err == nil {
			f.Close()
			t.Errorf("%s: opened, want refused as outside %s", file, logDir)
		}
	}
	for _, file := range []string{"a.log", filepath.Join(logDir, "a.log"), "sub/../a.log"} {
		f, err := OpenLogFile(logDir, file)
		if err != nil {
			t.Errorf("%s: %v", file, err)
			continue
		}
		if f.Name() != filepath.Join(logDir, "a.log") {
			t.Errorf("%s opened as %s", file, f.Name())
		}
		f.Close()
	}
}
