package benchmarks

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Stack is one meta-plugin setup on the node, configured as its own installer would.
type Stack struct {
	Name string // "multinet", "multus", "multinet-thick" or "multus-thick"
	// Conf is the conflist the runtime hands to libcni, per bin dir (plain or wrapped).
	conf map[string][]byte
	// daemon (thick stacks) serves the plain (false) or wrapped (true) pass: multinetd serves
	// both (the conf names the bin dir), multus-daemon takes its bin dir from its own config.
	daemon map[bool]*daemon
	// metricsAddr is multinetd's /metrics (per-delegate times of the in-process sriov).
	metricsAddr string
	// stateDirs hold the stack's per-container state: a file naming a container after its
	// DEL is a leak.
	stateDirs []string
}

func (s *Stack) thick() bool { return s.daemon != nil }

// cniBin builds the node's CNI bin dir: the meta-plugins, our sriov and the reference plugins,
// as symlinks. wrapped=true puts the timing wrapper in place of every delegate the meta-plugins
// call directly (bridge, portmap, sriov, macvlan).
func cniBin(dir string, plugins map[string]string, wrapper string, wrapped bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	delegates := map[string]bool{"bridge": true, "portmap": true, "sriov": true, "macvlan": true}
	for name, target := range plugins {
		if wrapped && delegates[name] {
			target = wrapper
		}
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

// multinetConf is what `multinet config generate` writes on this node, with binDir pinned.
func multinetConf(multinet, confDir, kubeconfig, cacheDir, binDir string) ([]byte, error) {
	out, err := exec.Command(multinet, "config", "generate", "--conf-dir", confDir, "--kubeconfig", kubeconfig,
		"--cache-dir", cacheDir, "--bin-dir", binDir).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("multinet config generate: %w: %s", err, out)
	}
	p := filepath.Join(confDir, "00-multinet.conflist")
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	// Generated once per bin dir: remove it so the next generate wraps the bridge again.
	return b, os.Remove(p)
}

// multusConf is the conflist Multus's thin_entrypoint writes (its template for a conflist
// master: the master conf inlined as the only delegate), with binDir and cniDir pinned.
// clusterNetworkPath=true writes the hand-written form instead: `clusterNetwork` naming the
// conflist path.
func multusConf(clusterConflist, kubeconfig, cacheDir, binDir string, clusterNetworkPath bool) ([]byte, error) {
	master, err := os.ReadFile(clusterConflist)
	if err != nil {
		return nil, err
	}
	var m map[string]interface{}
	if err := json.Unmarshal(master, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", clusterConflist, err)
	}
	conf := map[string]interface{}{
		"cniVersion": m["cniVersion"], "name": "multus-cni-network",
		"plugins": []interface{}{map[string]interface{}{
			"type": "multus", "capabilities": map[string]bool{"portMappings": true},
			"kubeconfig": kubeconfig, "cniDir": cacheDir, "binDir": binDir,
			"delegates": []interface{}{m},
		}},
	}
	if clusterNetworkPath {
		p := conf["plugins"].([]interface{})[0].(map[string]interface{})
		delete(p, "delegates")
		p["clusterNetwork"] = clusterConflist
	}
	return json.Marshal(conf)
}
