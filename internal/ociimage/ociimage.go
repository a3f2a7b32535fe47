// Package ociimage writes a container image as a `docker save` archive (what `ctr images
// import` and `docker load` take) from files on this machine: no daemon, no registry, no base
// image. One layer, written reproducibly (sorted, zero times and owners, explicit modes), so the
// same files give the same image ID and a content tag that changes only when they do.
package ociimage

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
)

// DefaultPath is the PATH of the image's processes.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Image is an image being assembled: its files and its config.
type Image struct {
	Entrypoint []string
	Cmd        []string
	Env        []string // DefaultPath when empty
	Labels     map[string]string
	entries    map[string]entry // by path inside the image, without the leading slash
}

// entry is one member of the layer: a directory, a regular file (from a host file or bytes)
// or a symlink.
type entry struct {
	typ  byte
	host string
	data []byte
	link string
	mode fs.FileMode
}

// New returns an empty image.
func New() *Image { return &Image{entries: map[string]entry{}} }

func clean(p string) string { return strings.TrimPrefix(path.Clean("/"+p), "/") }

// parents records the parents of an image path as directories, unless already there.
func (im *Image) parents(p string) {
	for d := path.Dir(p); d != "." && d != "/" && d != ""; d = path.Dir(d) {
		if _, ok := im.entries[d]; !ok {
			im.entries[d] = entry{typ: tar.TypeDir, mode: 0o755}
		}
	}
}

// AddDir adds a directory (and its parents, 0755).
func (im *Image) AddDir(p string, mode fs.FileMode) {
	p = clean(p)
	im.parents(p)
	im.entries[p] = entry{typ: tar.TypeDir, mode: mode.Perm() | mode&(fs.ModeSticky)}
}

// AddFile adds the host file host at p with mode (executables need 0755: containerd keeps the
// layer's modes as they are); symlinks on the host are followed.
func (im *Image) AddFile(p, host string, mode fs.FileMode) error {
	fi, err := os.Stat(host)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", host)
	}
	p = clean(p)
	im.parents(p)
	im.entries[p] = entry{typ: tar.TypeReg, host: host, mode: mode.Perm()}
	return nil
}

// AddBytes adds a file holding data at p.
func (im *Image) AddBytes(p string, data []byte, mode fs.FileMode) {
	p = clean(p)
	im.parents(p)
	im.entries[p] = entry{typ: tar.TypeReg, data: data, mode: mode.Perm()}
}

// AddSymlink adds a symlink at p pointing to target (as written, relative or absolute).
func (im *Image) AddSymlink(p, target string) {
	p = clean(p)
	im.parents(p)
	im.entries[p] = entry{typ: tar.TypeSymlink, link: target, mode: 0o777}
}

// Has reports whether something is at p, and whether it is a directory.
func (im *Image) Has(p string) (exists, dir bool) {
	e, ok := im.entries[clean(p)]
	return ok, ok && e.typ == tar.TypeDir
}

// CheckRef refuses a reference without a registry host: containerd (and docker) normalise
// "multinet:1" to "docker.io/library/multinet:1", so a pod naming the short form and the
// imported image would not match.
func CheckRef(ref string) error {
	name := ref
	if i := strings.LastIndex(ref, "@"); i >= 0 {
		return fmt.Errorf("image reference %q: a digest reference cannot be written, use NAME[:TAG]", ref)
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		name = ref[:i]
		if ref[i+1:] == "" {
			return fmt.Errorf("image reference %q: empty tag", ref)
		}
	}
	host, rest, ok := strings.Cut(name, "/")
	if !ok || rest == "" || !(strings.ContainsAny(host, ".:") || host == "localhost") {
		return fmt.Errorf("image reference %q: want a fully qualified name (registry host first, e.g. registry.local/%s): containerd would read it as docker.io/library/...", ref, name)
	}
	if name != strings.ToLower(name) {
		return fmt.Errorf("image reference %q: repository names are lower case", ref)
	}
	return nil
}

// Written is what Write produced.
type Written struct {
	ID   string   // sha256 hex of the config: the image ID
	Tag  string   // the content tag: the ID's first 16 hex digits
	Refs []string // the references in the archive
}

// Write writes the archive to out. Each ref is NAME:TAG, or NAME alone to be tagged with the
// image's content tag (never :latest: a DaemonSet whose image field does not change never
// rolls, and IfNotPresent would keep running the old image).
func (im *Image) Write(out string, refs ...string) (*Written, error) {
	if len(refs) == 0 {
		return nil, fmt.Errorf("image %s: no reference to tag it with", out)
	}
	for _, r := range refs {
		if err := CheckRef(r); err != nil {
			return nil, err
		}
	}
	lf, err := os.CreateTemp(filepath.Dir(out), ".layer-*.tar")
	if err != nil {
		return nil, err
	}
	defer os.Remove(lf.Name())
	defer lf.Close()
	sum := sha256.New()
	if err := im.writeLayer(io.MultiWriter(lf, sum)); err != nil {
		return nil, err
	}
	layerID := hex.EncodeToString(sum.Sum(nil))
	size, err := lf.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, err
	}
	if _, err := lf.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	env := im.Env
	if len(env) == 0 {
		env = []string{DefaultPath}
	}
	cc := map[string]any{"Entrypoint": im.Entrypoint, "Env": env}
	if len(im.Cmd) > 0 {
		cc["Cmd"] = im.Cmd
	}
	if len(im.Labels) > 0 {
		cc["Labels"] = im.Labels
	}
	// containerd filters out (as "no match for platform") an image whose config lacks os and
	// architecture.
	cfg, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH, "os": "linux", "config": cc,
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + layerID}},
	})
	if err != nil {
		return nil, err
	}
	cfgSum := sha256.Sum256(cfg)
	w := &Written{ID: hex.EncodeToString(cfgSum[:])}
	w.Tag = w.ID[:16]
	for _, r := range refs {
		if i := strings.LastIndex(r, ":"); i <= strings.LastIndex(r, "/") {
			r += ":" + w.Tag
		}
		w.Refs = append(w.Refs, r)
	}
	cfgName := w.ID + ".json"
	manifest, err := json.Marshal([]map[string]any{{"Config": cfgName, "RepoTags": w.Refs, "Layers": []string{layerID + "/layer.tar"}}})
	if err != nil {
		return nil, err
	}
	// Written beside out and renamed: a reader never sees half an archive.
	f, err := os.CreateTemp(filepath.Dir(out), ".image-*.tar")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	tw := tar.NewWriter(f)
	if err := tw.WriteHeader(&tar.Header{Name: layerID + "/layer.tar", Mode: 0o644, Size: size, Format: tar.FormatPAX}); err != nil {
		return nil, err
	}
	if _, err := io.Copy(tw, lf); err != nil {
		return nil, err
	}
	for _, e := range []struct {
		name string
		data []byte
	}{{cfgName, cfg}, {"manifest.json", manifest}} {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := f.Chmod(0o644); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	if err := os.Rename(f.Name(), out); err != nil {
		return nil, err
	}
	return w, nil
}

// writeLayer writes the layer tar: sorted (a parent before what it holds), owned by root, with
// zero times, so equal files make an equal layer.
func (im *Image) writeLayer(w io.Writer) error {
	lw := tar.NewWriter(w)
	names := make([]string, 0, len(im.entries))
	for n := range im.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		e := im.entries[n]
		mode := int64(e.mode.Perm())
		if e.mode&fs.ModeSticky != 0 {
			mode |= 0o1000
		}
		h := &tar.Header{Name: n, Typeflag: e.typ, Mode: mode, Linkname: e.link, Format: tar.FormatPAX}
		var data []byte
		var f *os.File
		switch e.typ {
		case tar.TypeDir:
			h.Name += "/"
		case tar.TypeReg:
			if e.host == "" {
				data, h.Size = e.data, int64(len(e.data))
				break
			}
			var err error
			if f, err = os.Open(e.host); err != nil {
				return err
			}
			fi, err := f.Stat()
			if err != nil {
				f.Close()
				return err
			}
			h.Size = fi.Size()
		}
		if err := lw.WriteHeader(h); err != nil {
			if f != nil {
				f.Close()
			}
			return fmt.Errorf("%s: %w", n, err)
		}
		if f != nil {
			_, err := io.Copy(lw, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", e.host, err)
			}
		} else if _, err := lw.Write(data); err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
	}
	return lw.Close()
}
