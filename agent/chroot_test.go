package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// --delegate-chroot: the agent's delegates run chrooted to the host's root. Here the "host" is
// a dir holding only a static plugin in /opt/cni/bin and a marker file; the plugin is found
// under the root (no such path outside it), runs inside it (it reads the marker), and its CNI
// error comes back decoded as invoke's exec returns it.
func TestDelegateChroot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: chroot")
	}
	root := t.TempDir()
	bin := filepath.Join(root, "opt", "cni", "bin")
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "chroottest"), "./testdata/chrootplugin")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc", "chroot-marker"), []byte("inchroot\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/etc/chroot-marker"); err == nil {
		t.Fatal("/etc/chroot-marker exists outside the chroot: the test cannot tell")
	}
	a, err := New(Config{Socket: filepath.Join(t.TempDir(), "s.sock"), DelegateChroot: root, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.ConfListFromBytes([]byte(`{"cniVersion": "1.0.0", "name": "chroot", "plugins": [{"type": "chroottest"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{"/opt/cni/bin"}, t.TempDir(), a.exec)
	rt := &libcni.RuntimeConf{ContainerID: "c1", NetNS: "/var/run/netns/none", IfName: "eth0"}
	res, err := cni.AddNetworkList(context.Background(), list, rt)
	if err != nil {
		t.Fatalf("ADD through the chroot: %v", err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Interfaces) != 1 || r.Interfaces[0].Name != "inchroot" {
		t.Fatalf("result %+v: the plugin did not run inside the chroot", r)
	}
	err = cni.DelNetworkList(context.Background(), list, rt)
	var te *types.Error
	if !errors.As(err, &te) || te.Code != 7 || te.Msg != "chroot plugin refuses DEL" {
		t.Fatalf("DEL error = %v, want the plugin's code 7", err)
	}

	// Without the chroot the same plugin path does not exist.
	plain, err := New(Config{Socket: filepath.Join(t.TempDir(), "s.sock"), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.exec.FindInPath("chroottest", []string{"/opt/cni/bin"}); err == nil {
		t.Fatal("chroottest found outside the chroot: the test cannot tell")
	}
}
