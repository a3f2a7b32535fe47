package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A pod as multinet sets it up: the downward-API file with network-status, the device
// plugin's env (no _INFO here, so sysfs tells the VF drivers apart).
func TestDPDKArgs(t *testing.T) {
	tree := simNode(t)
	status := `[{"name":"cbr0","interface":"eth0","default":true},
 {"name":"default/vhu","interface":"net1","device-info":{"type":"vhost-user","version":"1.1.0","vhost-user":{"mode":"server","path":"/var/run/vhu/vhost-0/sock"}}},
 {"name":"default/dpdk","interface":"net2","device-info":{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:00:12.2"}}},
 {"name":"default/kernel","interface":"net3","device-info":{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:00:12.0"}}}]`
	annot := filepath.Join(t.TempDir(), "annotations")
	if err := os.WriteFile(annot, []byte(fmt.Sprintf("k8s.v1.cni.cncf.io/network-status=%q\n", status)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PCIDEVICE_INTEL_COM_VFS", "0000:00:12.0,0000:00:12.2")
	var out, errb bytes.Buffer
	if code := run([]string{"dpdk-args", "--annotations", annot, "--sysfs-root", tree.Root}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if got, want := strings.TrimSpace(out.String()), "--vdev net_virtio_user0,path=/var/run/vhu/vhost-0/sock,server=1 -a 0000:00:12.2"; got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if !strings.Contains(errb.String(), "skipped 0000:00:12.0") {
		t.Fatalf("the kernel VF's skip is not reported: %s", errb.String())
	}

	out.Reset()
	errb.Reset()
	if code := run([]string{"dpdk-args", "--annotations", annot, "--sysfs-root", tree.Root, "-o", "lines", "--queues", "2"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if got := strings.Split(strings.TrimSpace(out.String()), "\n"); len(got) != 4 || got[1] != "net_virtio_user0,path=/var/run/vhu/vhost-0/sock,server=1,queues=2" {
		t.Fatalf("lines: %q", got)
	}

	// An explicitly named file that is missing is an error, not a silent fallback.
	if code := run([]string{"dpdk-args", "--annotations", annot + ".missing", "--sysfs-root", tree.Root}, &out, &errb); code != 1 {
		t.Fatalf("missing --annotations file: exit %d", code)
	}
}

func TestDPDKArgsWithoutDevices(t *testing.T) {
	var out, errb bytes.Buffer
	annot := filepath.Join(t.TempDir(), "annotations")
	os.WriteFile(annot, []byte(`k8s.v1.cni.cncf.io/network-status="[]"`+"\n"), 0o644)
	if code := run([]string{"dpdk-args", "--annotations", annot}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "no DPDK device") {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
}
