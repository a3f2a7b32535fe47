package agent

import (
	"os/exec"
	"strings"
	"testing"
)

// The agent watches two resources (pods, NADs); the shared informer factories import every API
// group's informers and listers, whose pages then sit in the agent's RSS on every node
// (benchmarks/RESULTS.md: the agent's RSS is mostly its binary).
func TestAgentImportsNoAllGroupsInformers(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	n := 0
	for _, pkg := range strings.Fields(string(out)) {
		switch {
		case pkg == "k8s.io/client-go/informers",
			pkg == "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/informers/externalversions":
			t.Errorf("agent imports the all-groups informer factory %s", pkg)
		case strings.HasPrefix(pkg, "k8s.io/client-go/informers/"), strings.HasPrefix(pkg, "k8s.io/client-go/listers/"):
			n++
		}
	}
	// core/v1's informer and lister, and what they stand on (internalinterfaces).
	if n > 4 {
		t.Errorf("agent imports %d client-go informer and lister packages, want core/v1's only", n)
	}
}
