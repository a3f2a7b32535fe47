package ociimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// archive is what a reader of a `docker save` tar (ctr images import) sees.
type archive struct {
	manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	config struct {
		Architecture string
		OS           string
		Config       struct {
			Entrypoint []string
			Env        []string
			Labels     map[string]string
		}
		RootFS struct {
			Type    string
			DiffIDs []string `json:"diff_ids"`
		}
	}
	configSum string
	layerSum  string
	layer     map[string]*tar.Header
	contents  map[string]string
}

func readArchive(t *testing.T, file string) *archive {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	members := map[string][]byte{}
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
		members[h.Name] = b
	}
	a := &archive{layer: map[string]*tar.Header{}, contents: map[string]string{}}
	if err := json.Unmarshal(members["manifest.json"], &a.manifest); err != nil || len(a.manifest) != 1 {
		t.Fatalf("manifest.json: %v %s", err, members["manifest.json"])
	}
	m := a.manifest[0]
	cfg := members[m.Config]
	if err := json.Unmarshal(cfg, &a.config); err != nil {
		t.Fatalf("config %s: %v", m.Config, err)
	}
	s := sha256.Sum256(cfg)
	a.configSum = hex.EncodeToString(s[:])
	if len(m.Layers) != 1 {
		t.Fatalf("layers %v", m.Layers)
	}
	layer := members[m.Layers[0]]
	s = sha256.Sum256(layer)
	a.layerSum = hex.EncodeToString(s[:])
	lr := tar.NewReader(bytes.NewReader(layer))
	for {
		h, err := lr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(lr)
		a.layer[h.Name] = h
		a.contents[h.Name] = string(b)
	}
	return a
}

func sample(t *testing.T) *Image {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(bin, []byte("#!/bin/true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	im := New()
	im.Entrypoint = []string{"/usr/local/bin/agent"}
	if err := im.AddFile("/usr/local/bin/agent", bin, 0o755); err != nil {
		t.Fatal(err)
	}
	im.AddSymlink("/opt/cni/bin/agent", "../../../usr/local/bin/agent")
	im.AddDir("/tmp", 0o777|fs.ModeSticky)
	im.AddBytes("/etc/multinet/version", []byte("1\n"), 0o644)
	return im
}

func TestWriteIsWhatContainerdImports(t *testing.T) {
	out := filepath.Join(t.TempDir(), "image.tar")
	w, err := sample(t).Write(out, "registry.local/multinet/multinet", "registry.local/multinet/multinet:e2e")
	if err != nil {
		t.Fatal(err)
	}
	a := readArchive(t, out)
	if a.config.OS != "linux" || a.config.Architecture == "" {
		t.Errorf("config os/architecture %q/%q: containerd filters out an image without them", a.config.OS, a.config.Architecture)
	}
	if a.configSum != w.ID || a.manifest[0].Config != w.ID+".json" {
		t.Errorf("image ID %s, config file %s sums to %s", w.ID, a.manifest[0].Config, a.configSum)
	}
	if got := a.config.RootFS.DiffIDs; len(got) != 1 || got[0] != "sha256:"+a.layerSum || a.config.RootFS.Type != "layers" {
		t.Errorf("rootfs %+v, layer sums to %s", a.config.RootFS, a.layerSum)
	}
	want := []string{"registry.local/multinet/multinet:" + w.ID[:16], "registry.local/multinet/multinet:e2e"}
	if strings.Join(a.manifest[0].RepoTags, " ") != strings.Join(want, " ") || strings.Join(w.Refs, " ") != strings.Join(want, " ") {
		t.Errorf("tags %v (returned %v), want %v", a.manifest[0].RepoTags, w.Refs, want)
	}
	if got := a.config.Config.Entrypoint; len(got) != 1 || got[0] != "/usr/local/bin/agent" {
		t.Errorf("entrypoint %v", got)
	}
	if len(a.config.Config.Env) != 1 || !strings.HasPrefix(a.config.Config.Env[0], "PATH=") {
		t.Errorf("env %v: want a PATH", a.config.Config.Env)
	}
	for name, want := range map[string]struct {
		typ  byte
		mode int64
	}{
		"usr/": {tar.TypeDir, 0o755}, "usr/local/": {tar.TypeDir, 0o755}, "usr/local/bin/": {tar.TypeDir, 0o755},
		"usr/local/bin/agent":  {tar.TypeReg, 0o755}, // the host file is 0600: the mode given wins
		"opt/cni/bin/agent":    {tar.TypeSymlink, 0o777},
		"tmp/":                 {tar.TypeDir, 0o1777},
		"etc/multinet/version": {tar.TypeReg, 0o644},
		"etc/":                 {tar.TypeDir, 0o755},
		"etc/multinet/":        {tar.TypeDir, 0o755},
		"opt/cni/":             {tar.TypeDir, 0o755},
	} {
		h := a.layer[name]
		if h == nil {
			t.Errorf("layer lacks %s", name)
			continue
		}
		if h.Typeflag != want.typ || h.Mode != want.mode || h.Uid != 0 || h.Gid != 0 || !h.ModTime.IsZero() && h.ModTime.Unix() != 0 {
			t.Errorf("%s: type %c mode %o uid %d gid %d mtime %v, want type %c mode %o, root, zero time", name, h.Typeflag, h.Mode, h.Uid, h.Gid, h.ModTime, want.typ, want.mode)
		}
	}
	if a.contents["usr/local/bin/agent"] != "#!/bin/true\n" || a.layer["opt/cni/bin/agent"].Linkname != "../../../usr/local/bin/agent" {
		t.Errorf("agent %q, link -> %q", a.contents["usr/local/bin/agent"], a.layer["opt/cni/bin/agent"].Linkname)
	}
	if len(a.layer) != 12 {
		t.Errorf("layer holds %d members, want 12 (nothing but what was added and its parents): %v", len(a.layer), a.layer)
	}
}

// The content tag is the tag a DaemonSet rolls on: equal files give the same one, any change
// (a file, a label) a new one.
func TestContentTag(t *testing.T) {
	dir := t.TempDir()
	w1, err := sample(t).Write(filepath.Join(dir, "1.tar"), "registry.local/m")
	if err != nil {
		t.Fatal(err)
	}
	w2, err := sample(t).Write(filepath.Join(dir, "2.tar"), "registry.local/m")
	if err != nil {
		t.Fatal(err)
	}
	if w1.Tag != w2.Tag || len(w1.Tag) != 16 {
		t.Errorf("same files, tags %q and %q", w1.Tag, w2.Tag)
	}
	labelled := sample(t)
	labelled.Labels = map[string]string{"rollout": "2"}
	w3, err := labelled.Write(filepath.Join(dir, "3.tar"), "registry.local/m")
	if err != nil {
		t.Fatal(err)
	}
	changed := sample(t)
	changed.AddBytes("/etc/multinet/version", []byte("2\n"), 0o644)
	w4, err := changed.Write(filepath.Join(dir, "4.tar"), "registry.local/m")
	if err != nil {
		t.Fatal(err)
	}
	if w3.Tag == w1.Tag || w4.Tag == w1.Tag || w3.Tag == w4.Tag {
		t.Errorf("tags %s (base) %s (label) %s (file): each change must make a new tag", w1.Tag, w3.Tag, w4.Tag)
	}
}

func TestRefsRefused(t *testing.T) {
	for _, ref := range []string{"multinet", "multinet:1", "multinet/multinet:1", "registry.local/Multinet:1",
		"registry.local/multinet:", "registry.local/multinet@sha256:0000"} {
		out := filepath.Join(t.TempDir(), "image.tar")
		if _, err := sample(t).Write(out, ref); err == nil {
			t.Errorf("%q: written", ref)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%q: refused but %s left behind", ref, out)
		}
	}
	for _, ref := range []string{"registry.local/multinet/multinet:abc", "localhost/m:1", "127.0.0.1:5000/m", "docker.io/library/busybox:1"} {
		if err := CheckRef(ref); err != nil {
			t.Errorf("%q: %v", ref, err)
		}
	}
}
