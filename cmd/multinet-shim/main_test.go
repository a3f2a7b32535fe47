package main

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The shim is exec'd for every CNI call: no Kubernetes, gRPC or metrics library may creep into
// it (their package init alone costs more than the whole shim should).
func TestShimImportsNoKubernetes(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, banned := range []string{"k8s.io/", "sigs.k8s.io/", "github.com/k8snetworkplumbingwg/", "google.golang.org/grpc",
			"github.com/prometheus/", "github.com/multinet-io/multinet/meta", "github.com/multinet-io/multinet/agent"} {
			if strings.HasPrefix(pkg, banned) && pkg != "github.com/multinet-io/multinet/meta/delcache" {
				t.Errorf("multinet-shim imports %s", pkg)
			}
		}
	}
}

// Built as the install builds it, the shim is a static binary of a few MB.
func TestShimIsSmallStatic(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "multinet-shim")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	st, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > 8<<20 {
		t.Errorf("multinet-shim is %d bytes, want a few MB", st.Size())
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("multinet-shim is dynamically linked")
		}
	}
}
