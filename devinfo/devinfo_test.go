package devinfo

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func TestPathsAndRoundTrip(t *testing.T) {
	d := Dir(t.TempDir())
	if got, want := d.DPPath("intel.com/sriov_netdevice", "0000:3b:02.1"), filepath.Join(string(d), "dp", "intel.com-sriov_netdevice-0000:3b:02.1-device.json"); got != want {
		t.Fatalf("DPPath = %s, want %s", got, want)
	}
	if got := Dir("").Root(); got != DefaultBase {
		t.Fatalf("Dir(\"\").Root() = %s, want %s", got, DefaultBase)
	}
	// The environment is the binaries' to read (cmd/), not this package's: one process can
	// hold two roots.
	t.Setenv(EnvBase, t.TempDir())
	if got := Dir("").CNIPath("n", "c", "net1"); filepath.Dir(filepath.Dir(got)) != DefaultBase {
		t.Fatalf("CNIPath under %s follows the environment", got)
	}
	p := d.CNIPath("sriov-net", "abc123", "net1")
	if filepath.Base(p) != "sriov-net-abc123_net1" {
		t.Fatalf("CNIPath = %s", p)
	}
	if info, err := Load(p); info != nil || err != nil {
		t.Fatalf("missing file: %v %v", info, err)
	}
	for i := 0; i < 2; i++ { // a retried ADD overwrites
		if err := Save(p, PCI("0000:3b:02.1", "0000:3b:00.0")); err != nil {
			t.Fatal(err)
		}
	}
	info, err := Load(p)
	if err != nil || info.Pci.PciAddress != "0000:3b:02.1" || info.Pci.PfPciAddress != "0000:3b:00.0" || info.Version != "1.1.0" {
		t.Fatalf("loaded %+v, %v", info, err)
	}
	if err := Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := Remove(p); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatalf("file still there: %v", err)
	}
	os.WriteFile(p, []byte("{"), 0o644)
	if _, err := Load(p); err == nil {
		t.Fatal("corrupt file loaded")
	}
}

// Two Saves of one attachment's file at once (a retried ADD racing its first attempt) used to
// share the fixed temp name <path>.tmp: one rename found the other's temp file gone and the
// ADD failed. Each writer now has its own temp file; the file is always a whole device-info.
func TestSecurityDevinfoConcurrentSaves(t *testing.T) {
	p := Dir(t.TempDir()).CNIPath("sriov-net", "abc123", "net1")
	errs := make(chan error, 400)
	done := make(chan struct{})
	for w := 0; w < 4; w++ {
		go func(w int) {
			defer func() { done <- struct{}{} }()
			for i := 0; i < 100; i++ {
				if err := Save(p, PCI(fmt.Sprintf("0000:3b:02.%d", w), "0000:3b:00.0")); err != nil {
					errs <- err
				}
			}
		}(w)
	}
	for w := 0; w < 4; w++ {
		<-done
	}
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent Save: %v", err)
	}
	if info, err := Load(p); err != nil || info == nil || info.Pci == nil {
		t.Fatalf("after concurrent saves: %+v, %v", info, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Errorf("%d entries in %s, want the device-info file only (temp files left)", len(entries), filepath.Dir(p))
	}
}
