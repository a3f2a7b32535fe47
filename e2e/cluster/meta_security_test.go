//go:build e2e_cluster

package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/multinet-io/multinet/e2e/cluster/clustertest"
)

// The review's two root attacks, by a tenant who may only write NADs in its own namespace, on
// the real stack (kubelet, containerd, API mode): a NAD that is a nested multinet with binDir
// /bin and a delegate of type sh, and a NAD with an empty spec named like the node's own
// conflist (multinet-cni-network) as the pod's default network, which made every ADD exec
// itself again without bound. Both pods fail with events naming the NAD and the refusal; the
// tenant's command never runs.
func TestSecurityTenantNADCannotNestMultinet(t *testing.T) {
	c := clustertest.Connect(t)
	c.CreateNamespace(t, "tenant-evil")
	marker := filepath.Join(c.Dir, "pwned")
	os.Remove(marker)
	c.CreateNAD(t, "tenant-evil", "evil", fmt.Sprintf(`{"cniVersion":"1.0.0","name":"evil","type":"multinet","binDir":"/bin",
	  "delegates":[{"cniVersion":"1.0.0","name":"x","type":"sh","cmd":"$(id|tee -a %s)"}]}`, marker), nil)
	c.CreateNAD(t, "tenant-evil", "multinet-cni-network", "", nil)

	c.CreatePod(t, "tenant-evil", "nested", withNetworks("evil"))
	msg := c.WaitEvent(t, "tenant-evil", "nested", 60*time.Second, "NAD tenant-evil/evil", `plugin type "multinet" refused`)
	t.Logf("event: %s", msg)

	c.CreatePod(t, "tenant-evil", "loop", func(p *corev1.Pod) {
		p.Annotations = map[string]string{"v1.multus-cni.io/default-network": "tenant-evil/multinet-cni-network"}
	})
	msg = c.WaitEvent(t, "tenant-evil", "loop", 60*time.Second, "NAD tenant-evil/multinet-cni-network", "multinet's own")
	t.Logf("event: %s", msg)

	if b, err := os.ReadFile(marker); err == nil {
		t.Fatalf("the tenant's command ran on the node: %s", b)
	}
	time.Sleep(2 * time.Second)
	for _, name := range []string{"nested", "loop"} {
		if left := cacheMentions(c, c.Sandboxes(t, "tenant-evil", name)); len(left) > 0 {
			t.Errorf("pod %s: multinet cache lists refused sandboxes %v", name, left)
		}
	}
}
