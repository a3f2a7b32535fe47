package devinfo

import (
	"os"
	"path/filepath"
	"testing"
)

func TestPathsAndRoundTrip(t *testing.T) {
	t.Setenv(EnvBase, t.TempDir())
	if got, want := DPPath("intel.com/sriov_netdevice", "0000:3b:02.1"), filepath.Join(Base(), "dp", "intel.com-sriov_netdevice-0000:3b:02.1-device.json"); got != want {
		t.Fatalf("DPPath = %s, want %s", got, want)
	}
	p := CNIPath("sriov-net", "abc123", "net1")
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
