package main

import (
	"bytes"
	"strings"
	"testing"
)

// Settings that cannot work are refused at start with the flag named, not discovered at the
// first rotation.
func TestRefusesBadSettings(t *testing.T) {
	for args, want := range map[string]string{
		"--namespace=": "no --namespace and no POD_NAMESPACE",
		"--namespace=x --sync-interval=1m --ca-overlap=30s": "--ca-overlap 30s must be longer than --sync-interval 1m0s",
	} {
		var stderr bytes.Buffer
		t.Setenv("POD_NAMESPACE", "")
		if rc := run(strings.Fields(args), &stderr); rc != 1 || !strings.Contains(stderr.String(), want) {
			t.Errorf("%s: rc %d, stderr %q, want %q", args, rc, stderr.String(), want)
		}
	}
}
