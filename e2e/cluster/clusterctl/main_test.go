package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"
)

// readImage returns the members of an image's only layer, by path.
func readImage(t *testing.T, file string) (map[string]*tar.Header, map[string][]byte) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	outer := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		outer[h.Name] = b
	}
	var manifest []struct{ Layers []string }
	if err := json.Unmarshal(outer["manifest.json"], &manifest); err != nil || len(manifest) != 1 || len(manifest[0].Layers) != 1 {
		t.Fatalf("manifest %s: %v", outer["manifest.json"], err)
	}
	hdrs, data := map[string]*tar.Header{}, map[string][]byte{}
	lr := tar.NewReader(bytes.NewReader(outer[manifest[0].Layers[0]]))
	for {
		h, err := lr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(h.Name, "/")
		hdrs[name] = h
		data[name], _ = io.ReadAll(lr)
	}
	return hdrs, data
}

// resolve follows a path through the layer's own symlinks, as the container's kernel will.
func resolve(hdrs map[string]*tar.Header, p string) (string, bool) {
	cur := ""
	parts := strings.Split(strings.Trim(p, "/"), "/")
	for i := 0; i < len(parts); i++ {
		next := filepath.Join(cur, parts[i])
		h, ok := hdrs[next]
		if !ok {
			return next, false
		}
		if h.Typeflag == tar.TypeSymlink {
			target := h.Linkname
			if !filepath.IsAbs(target) {
				target = filepath.Join("/", cur, target)
			}
			rest := append(strings.Split(strings.Trim(target, "/"), "/"), parts[i+1:]...)
			parts, cur, i = rest, "", -1
			continue
		}
		cur = next
	}
	return cur, hdrs[cur] != nil && hdrs[cur].Typeflag == tar.TypeReg
}

// The image of a dynamically linked host program carries every library ldd names for it and
// the symlinks on the way (Debian's /lib -> usr/lib), so it runs in a root of its own; a host
// directory comes whole, its symlinks as symlinks; a renamed file lands where it was told.
func TestImageFilesCarriesLibrariesAndLinks(t *testing.T) {
	const prog = "/usr/bin/stdbuf"
	if _, err := exec.LookPath("ldd"); err != nil {
		t.Skip("no ldd")
	}
	ldd, err := exec.Command("ldd", prog).Output()
	if err != nil {
		t.Skipf("ldd %s: %v", prog, err)
	}
	host := t.TempDir()
	d := filepath.Join(host, "d")
	os.MkdirAll(d, 0o755)
	os.WriteFile(filepath.Join(d, "real"), []byte("real\n"), 0o644)
	os.Symlink("real", filepath.Join(d, "link"))
	os.Symlink("d", filepath.Join(host, "ldir"))
	greeting := filepath.Join(host, "greeting")
	os.WriteFile(greeting, []byte("hello\n"), 0o600)

	out := filepath.Join(t.TempDir(), "img.tar")
	if err := imageFiles("registry.local/t:1", out, prog, []string{prog, filepath.Join(host, "ldir"), greeting + "=/etc/greeting"}); err != nil {
		t.Fatal(err)
	}
	hdrs, data := readImage(t, out)
	for _, line := range strings.Split(string(ldd), "\n") {
		f := strings.Fields(line)
		lib := ""
		switch {
		case len(f) >= 3 && f[1] == "=>":
			lib = f[2]
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			lib = f[0]
		}
		if !strings.HasPrefix(lib, "/") {
			continue
		}
		if got, ok := resolve(hdrs, lib); !ok {
			t.Errorf("%s needs %s: not a file in the image (resolved to %s)", prog, lib, got)
		}
	}
	if _, ok := resolve(hdrs, prog); !ok {
		t.Errorf("%s not in the image", prog)
	}
	ldir := strings.TrimPrefix(filepath.Join(host, "ldir"), "/")
	if h := hdrs[ldir]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "d" {
		t.Errorf("%s: %+v, want a symlink to d", ldir, h)
	}
	link := strings.TrimPrefix(filepath.Join(d, "link"), "/")
	if h := hdrs[link]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "real" {
		t.Errorf("%s: %+v, want a symlink to real", link, h)
	}
	if got := string(data[strings.TrimPrefix(filepath.Join(d, "real"), "/")]); got != "real\n" {
		t.Errorf("the directory's file: %q", got)
	}
	if got, h := string(data["etc/greeting"]), hdrs["etc/greeting"]; got != "hello\n" || h.Mode != 0o600 {
		t.Errorf("renamed file: %q mode %v", got, h)
	}

	if os.Geteuid() != 0 {
		t.Log("not root: the image's program is not run in a root of its own")
		return
	}
	root := t.TempDir()
	for name, h := range hdrs {
		p := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		switch h.Typeflag {
		case tar.TypeDir:
			os.MkdirAll(p, 0o755)
		case tar.TypeSymlink:
			os.Symlink(h.Linkname, p)
		case tar.TypeReg:
			os.WriteFile(p, data[name], os.FileMode(h.Mode))
		}
	}
	cmd := exec.Command(prog, "--version")
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s in a root of the image's files only: %v\n%s", prog, err, b)
	}
}

func TestImageFilesRefusesWhatItCannotCarry(t *testing.T) {
	out := filepath.Join(t.TempDir(), "img.tar")
	if err := imageFiles("registry.local/t:1", out, "/x", []string{"/no/such/file"}); err == nil || !strings.Contains(err.Error(), "/no/such/file") {
		t.Errorf("missing file: %v", err)
	}
	if err := imageFiles("registry.local/t:1", out, "/x", []string{"relative/path"}); err == nil || !strings.Contains(err.Error(), "absolute") {
		t.Errorf("relative path: %v", err)
	}
}

// The controller-manager makes a namespace's default ServiceAccount at about the time cluster-up
// applies its own: an object created by someone else between apply's Get and Create is updated,
// not an error that fails cluster-up.
func TestApplyObjectCreatedMeanwhile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "sa.yaml")
	os.WriteFile(f, []byte("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: default\n  namespace: default\n  labels: {from: file}\n"), 0o644)
	dc := dynamicfake.NewSimpleDynamicClient(runtime.NewScheme())
	sas := schema.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}
	raced := false
	dc.PrependReactor("create", "serviceaccounts", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if raced {
			return false, nil, nil
		}
		raced = true
		other := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ServiceAccount",
			"metadata": map[string]any{"name": "default", "namespace": "default"}}}
		if err := dc.Tracker().Create(sas, other, "default"); err != nil {
			t.Fatal(err)
		}
		return true, nil, apierrors.NewAlreadyExists(schema.GroupResource{Resource: "serviceaccounts"}, "default")
	})
	if err := apply(dc, f); err != nil {
		t.Fatalf("apply: %v", err)
	}
	got, err := dc.Resource(sas).Namespace("default").Get(context.Background(), "default", metav1.GetOptions{})
	if err != nil || got.GetLabels()["from"] != "file" || !raced {
		t.Fatalf("after apply: %v %v (raced %v)", got, err, raced)
	}
}
