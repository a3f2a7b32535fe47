package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/multinet-io/multinet/pci/pcitest"
)

func simNode(t *testing.T) *pcitest.Tree {
	tree := pcitest.New(t)
	tree.AddPF(pcitest.PF{Address: "0000:00:02.0", Vendor: "8086", Device: "10c9", Driver: "igb", Netdev: "enp0s2", TotalVFs: 7})
	tree.AddVF(pcitest.VF{PF: "0000:00:02.0", Index: 0, Address: "0000:00:12.0", Vendor: "8086", Device: "10ca", Driver: "igbvf", Netdev: "enp0s2v0"})
	tree.AddVF(pcitest.VF{PF: "0000:00:02.0", Index: 1, Address: "0000:00:12.2", Vendor: "8086", Device: "10ca", Driver: "vfio-pci", DefaultDriver: "igbvf"})
	return tree
}

func TestDevicesJSON(t *testing.T) {
	tree := simNode(t)
	var out, errb bytes.Buffer
	if code := run([]string{"devices", "--sysfs-root", tree.Root, "-o", "json"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var devs []map[string]any
	if err := json.Unmarshal(out.Bytes(), &devs); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(devs) != 3 {
		t.Fatalf("%d devices", len(devs))
	}
	for _, key := range []string{"address", "vendor", "device", "driver", "netdev", "pfAddress", "vfIndex", "numaNode", "iommuGroup", "totalVfs", "numVfs"} {
		if _, ok := devs[0][key]; !ok {
			t.Errorf("JSON lacks %q: %v", key, devs[0])
		}
	}
	pf, vfio := devs[0], devs[2]
	if pf["pfAddress"] != "" || pf["vfIndex"].(float64) != -1 || pf["totalVfs"].(float64) != 7 || pf["numVfs"].(float64) != 2 {
		t.Errorf("PF = %v", pf)
	}
	if vfio["pfAddress"] != "0000:00:02.0" || vfio["vfIndex"].(float64) != 1 || vfio["netdev"] != "" || vfio["driver"] != "vfio-pci" {
		t.Errorf("vfio VF = %v", vfio)
	}
}

func TestDevicesTableNestsVFsUnderPF(t *testing.T) {
	tree := simNode(t)
	var out, errb bytes.Buffer
	if code := run([]string{"devices", "--sysfs-root", tree.Root}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[1], "0000:00:02.0") || !strings.HasPrefix(lines[2], "  0000:00:12.0 vf0") || !strings.Contains(lines[1], "2/7") {
		t.Fatalf("table:\n%s", out.String())
	}
}

func TestVFApplyBadInput(t *testing.T) {
	tree := simNode(t)
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"vf", "apply", "--sysfs-root", tree.Root}, "-f POLICY.yaml is required"},
		{[]string{"vf", "apply", "-f", filepath.Join(dir, "nope.yaml")}, "no such file"},
		{[]string{"vf", "apply", "--sysfs-root", tree.Root, "-f", write("bad.yaml", "pfs: [")}, "bad.yaml: policy:"},
		{[]string{"vf", "apply", "--sysfs-root", tree.Root, "-f", write("pf.yaml", "pfs:\n- pf: ens9\n  numVfs: 1\n")}, `unknown pf "ens9"`},
		{[]string{"devices", "-o", "yaml"}, `-o "yaml"`},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		if code := run(c.args, &out, &errb); code == 0 || !strings.Contains(errb.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q, want %q", c.args, code, errb.String(), c.want)
		}
	}
}

func TestVFApplyDryRunThenNoChange(t *testing.T) {
	tree := simNode(t)
	p := filepath.Join(t.TempDir(), "p.yaml")
	os.WriteFile(p, []byte("pfs:\n- pf: enp0s2\n  numVfs: 2\n  groups:\n  - {vfs: \"1\", driver: vfio-pci}\n"), 0o644)
	var out, errb bytes.Buffer
	if code := run([]string{"vf", "apply", "--sysfs-root", tree.Root, "-f", p}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if strings.TrimSpace(out.String()) != "no change" {
		t.Errorf("output %q, want no change (the node already matches)", out.String())
	}
}
