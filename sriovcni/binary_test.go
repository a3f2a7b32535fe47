package sriovcni

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/multinet-io/multinet/devinfo"
	"github.com/multinet-io/multinet/devpools"
	"github.com/multinet-io/multinet/pci"
)

// runPlugin execs the sriov binary as a runtime does: CNI_* environment, netconf on stdin, the
// host's netns (here the simulated node's) inherited from the calling thread.
func (n *node) runPlugin(bin, command, cid, netns string, conf []byte) ([]byte, error) {
	var out []byte
	var err error
	_ = n.host.Do(func(ns.NetNS) error {
		cmd := exec.Command(bin)
		cmd.Env = []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + cid, "CNI_NETNS=" + netns,
			"CNI_IFNAME=net1", "CNI_PATH=" + cniBinDir, "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=p;MAC=02:00:00:00:99:01",
			pci.EnvSysfsRoot + "=" + n.p.Sys.Root, EnvStateDir + "=" + filepath.Dir(n.p.StateDir),
			devinfo.EnvBase + "=" + n.p.DevInfo.Root(), devpools.EnvPath + "=" + os.Getenv(devpools.EnvPath)}
		cmd.Stdin = bytes.NewReader(conf)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err = cmd.Output()
		if err != nil {
			n.t.Logf("%s %s: stderr: %s", bin, command, stderr.String())
		}
		return nil
	})
	return out, err
}

func TestBinaryAsARuntimeRunsIt(t *testing.T) {
	n := newNode(t)
	bin := filepath.Join(t.TempDir(), "sriov")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/sriov").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	pod := n.pod()
	// An old netconf version: the result comes back in the 0.4.0 format.
	conf := []byte(`{"cniVersion":"0.4.0","name":"sriov-net","type":"sriov","deviceID":"0000:00:12.2",
		"ipam":{"type":"host-local","subnet":"10.78.0.0/24","dataDir":"` + n.ipamDir + `"}}`)
	out, err := n.runPlugin(bin, "ADD", "bin1", pod.Path(), conf)
	if err != nil {
		t.Fatalf("ADD: %v: %s", err, out)
	}
	var res struct {
		CNIVersion string `json:"cniVersion"`
		Interfaces []struct {
			Name, Mac, Sandbox string
		} `json:"interfaces"`
		IPs []struct {
			Version, Address string
		} `json:"ips"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("ADD output %s: %v", out, err)
	}
	if res.CNIVersion != "0.4.0" || len(res.Interfaces) != 1 || res.Interfaces[0].Name != "net1" ||
		res.Interfaces[0].Mac != "02:00:00:00:99:01" || res.Interfaces[0].Sandbox != pod.Path() ||
		len(res.IPs) != 1 || res.IPs[0].Version != "4" || !strings.HasPrefix(res.IPs[0].Address, "10.78.0.") {
		t.Errorf("ADD result %s", out)
	}
	if l := link(t, pod, "net1"); l == nil || l.Attrs().HardwareAddr.String() != "02:00:00:00:99:01" {
		t.Errorf("net1 in the pod: %v (CNI_ARGS MAC)", l)
	}

	var m map[string]any
	_ = json.Unmarshal(conf, &m)
	m["prevResult"] = json.RawMessage(out)
	withPrev, _ := json.Marshal(m)
	if out, err := n.runPlugin(bin, "CHECK", "bin1", pod.Path(), withPrev); err != nil {
		t.Errorf("CHECK: %v: %s", err, out)
	}
	if out, err := n.runPlugin(bin, "DEL", "bin1", pod.Path(), conf); err != nil {
		t.Fatalf("DEL: %v: %s", err, out)
	}
	n.assertVFHome("mnvf2", pod)
	n.assertClean()

	out, err = n.runPlugin(bin, "VERSION", "", "", []byte(`{"cniVersion":"1.1.0"}`))
	if err != nil || !strings.Contains(string(out), `"1.1.0"`) || !strings.Contains(string(out), `"0.3.1"`) {
		t.Errorf("VERSION: %v: %s", err, out)
	}
	// A runtime error comes back as CNI error JSON on stdout.
	out, err = n.runPlugin(bin, "ADD", "bin2", pod.Path(), []byte(`{"cniVersion":"1.0.0","name":"x","type":"sriov","deviceID":"0000:00:12.2","vlan":5000}`))
	if err == nil || !strings.Contains(string(out), `field \"vlan\": 5000 out of range`) {
		t.Errorf("bad vlan: %v: %s", err, out)
	}
	if _, err := os.Stat(n.p.StateDir); err == nil {
		if f := n.stateFiles(); len(f) != 0 {
			t.Errorf("state after a refused ADD: %v", f)
		}
	}
}
