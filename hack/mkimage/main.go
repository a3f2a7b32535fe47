// Command mkimage writes the multinet image (make image): the given files, and nothing else,
// as a docker-archive tagged NAME:<content tag>, for `ctr -n k8s.io images import` on a node
// or for a registry's own loader. Every file is written 0755: they are the static binaries.
//
//	mkimage -name registry.local/multinet/multinet -out bin/multinet-image.tar \
//	  -entrypoint /usr/local/bin/multinetd [-label KEY=VALUE]... HOSTFILE=IMAGEPATH...
//
// It prints the reference and the file.
package main

import (
	"flag"
	"fmt"
	iofs "io/fs"
	"os"
	"strings"

	"github.com/multinet-io/multinet/internal/ociimage"
)

type labels map[string]string

func (l labels) String() string { return fmt.Sprint(map[string]string(l)) }
func (l labels) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("label %q: want KEY=VALUE", v)
	}
	l[k] = val
	return nil
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "mkimage: %v\n", err)
		os.Exit(1)
	}
}

func run(argv []string) error {
	fs := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	name := fs.String("name", "", "image name, registry host first (tagged with the content tag); NAME:TAG for a tag of your own")
	out := fs.String("out", "", "archive to write")
	entrypoint := fs.String("entrypoint", "", "the image's entrypoint")
	lbl := labels{}
	fs.Var(lbl, "label", "KEY=VALUE label of the image config (repeatable)")
	if err := fs.Parse(argv); err != nil {
		return err
	}
	if *name == "" || *out == "" || fs.NArg() == 0 {
		return fmt.Errorf("want -name, -out and HOSTFILE=IMAGEPATH arguments")
	}
	im := ociimage.New()
	if *entrypoint != "" {
		im.Entrypoint = []string{*entrypoint}
	}
	if len(lbl) > 0 {
		im.Labels = lbl
	}
	// os.TempDir for the programs (a kubeconfig written elsewhere goes through a temp file).
	im.AddDir("/tmp", 0o777|iofs.ModeSticky)
	// As on every distribution: the runtime names pod netns /var/run/netns/..., which the agent
	// opens in its own root where only /run/netns is mounted.
	im.AddSymlink("/var/run", "../run")
	im.AddDir("/run", 0o755)
	for _, spec := range fs.Args() {
		host, img, ok := strings.Cut(spec, "=")
		if !ok || !strings.HasPrefix(img, "/") {
			return fmt.Errorf("%q: want HOSTFILE=/IMAGE/PATH", spec)
		}
		if err := im.AddFile(img, host, 0o755); err != nil {
			return fmt.Errorf("%s: %w", spec, err)
		}
	}
	w, err := im.Write(*out, *name)
	if err != nil {
		return err
	}
	fmt.Println(w.Refs[0], *out)
	return nil
}
