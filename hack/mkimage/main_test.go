package main

import (
	"archive/tar"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMkimage(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "multinetd")
	os.WriteFile(bin, []byte("\x7fELF"), 0o600)
	out := filepath.Join(dir, "image.tar")
	if err := run([]string{"-name", "registry.local/multinet/multinet", "-out", out, "-entrypoint", "/usr/local/bin/multinetd",
		"-label", "rollout=2", bin + "=/usr/local/bin/multinetd"}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	members := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		members[h.Name], _ = io.ReadAll(tr)
	}
	var m []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	json.Unmarshal(members["manifest.json"], &m)
	if len(m) != 1 || len(m[0].RepoTags) != 1 || !strings.HasPrefix(m[0].RepoTags[0], "registry.local/multinet/multinet:") {
		t.Fatalf("manifest %s", members["manifest.json"])
	}
	var cfg struct {
		Config struct {
			Entrypoint []string
			Labels     map[string]string
		}
	}
	json.Unmarshal(members[m[0].Config], &cfg)
	if len(cfg.Config.Entrypoint) != 1 || cfg.Config.Entrypoint[0] != "/usr/local/bin/multinetd" || cfg.Config.Labels["rollout"] != "2" {
		t.Errorf("config %s", members[m[0].Config])
	}
	layer := tar.NewReader(strings.NewReader(string(members[m[0].Layers[0]])))
	modes := map[string]int64{}
	links := map[string]string{}
	for {
		h, err := layer.Next()
		if err != nil {
			break
		}
		modes[h.Name] = h.Mode
		if h.Typeflag == tar.TypeSymlink {
			links[h.Name] = h.Linkname
		}
	}
	if links["var/run"] != "../run" || modes["run/"] != 0o755 {
		t.Errorf("layer links %v: want /var/run -> ../run and a /run dir (pod netns paths are /var/run/netns/...)", links)
	}
	if modes["usr/local/bin/multinetd"] != 0o755 || modes["tmp/"] != 0o1777 {
		t.Errorf("layer modes %v: want the binary 0755 (its host file is 0600) and /tmp 1777", modes)
	}
}

func TestMkimageRefuses(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "b")
	os.WriteFile(bin, []byte("x"), 0o755)
	for _, args := range [][]string{
		{"-name", "multinet", "-out", filepath.Join(dir, "a.tar"), bin + "=/b"},                       // not fully qualified
		{"-name", "registry.local/m", "-out", filepath.Join(dir, "a.tar"), bin},                       // no image path
		{"-name", "registry.local/m", "-out", filepath.Join(dir, "a.tar"), bin + "=relative"},         // relative image path
		{"-name", "registry.local/m", "-out", filepath.Join(dir, "a.tar"), dir + "/missing=/missing"}, // no such file
		{"-name", "registry.local/m", "-out", filepath.Join(dir, "a.tar"), "-label", "nokey", bin + "=/b"},
	} {
		if err := run(args); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "a.tar")); err == nil {
		t.Error("a refused image left its archive")
	}
}
