package agent

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/multinet-io/multinet/internal/cniwire"
	"github.com/multinet-io/multinet/sriovcni"
)

// A request whose handling panics (here the in-process sriov delegate, given a Plugin without
// its sysfs) is answered with a CNI error naming the failure, counted as an error, and the
// agent goes on serving: no input takes the node's networking down.
func TestPanicInARequestIsACNIError(t *testing.T) {
	dir := t.TempDir()
	cluster := filepath.Join(dir, "10-vf.conf")
	if err := os.WriteFile(cluster, []byte(`{"cniVersion":"1.0.0","name":"vf","type":"sriov","deviceID":"0000:00:12.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Socket: filepath.Join(dir, "s.sock"), Sriov: &sriovcni.Plugin{StateDir: filepath.Join(dir, "state")}})
	if err != nil {
		t.Fatal(err)
	}
	stdin, _ := json.Marshal(map[string]interface{}{"cniVersion": "1.0.0", "name": "multinet-cni-network", "type": "multinet-shim",
		"clusterNetwork": cluster, "cacheDir": filepath.Join(dir, "cache")})
	env := map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ctr-1", "CNI_NETNS": "/proc/self/ns/net", "CNI_IFNAME": "eth0",
		"CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p", "CNI_PATH": filepath.Join(dir, "bin")}
	resp := a.serve(context.Background(), &cniwire.Request{Env: env, Stdin: stdin})
	if resp.Error == nil || !strings.Contains(resp.Error.Msg, "internal error") {
		t.Fatalf("ADD that panics below the agent: response %+v, want a CNI error saying internal error", resp)
	}
	t.Logf("answer: %s", resp.Error.Msg)
	if n := value(t, a.metrics.requests.WithLabelValues("ADD", "error")); n != 1 {
		t.Errorf("ADD errors counted %v, want 1", n)
	}
	if n := value(t, a.metrics.inFlight); n != 0 {
		t.Errorf("in flight after the panic: %v", n)
	}
	// Still serving, and the container's turn was given back.
	env["CNI_COMMAND"] = "VERSION"
	if resp := a.serve(context.Background(), &cniwire.Request{Env: env, Stdin: stdin}); resp.Error != nil || len(resp.Result) == 0 {
		t.Fatalf("VERSION after the panic: %+v", resp)
	}
}

func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}
