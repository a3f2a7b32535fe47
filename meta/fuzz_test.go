package meta

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// FuzzPlan drives the planner as a pod and a NAD author can: the networks and default-network
// annotations and one NAD's spec.config and resourceName (read through the standalone NAD
// folder, so its manifest loader is fuzzed too). Nothing may panic, and a plan that is accepted
// runs none of our own types, stays within the limits and names each interface once.
func FuzzPlan(f *testing.F) {
	for _, s := range [][4]string{
		{"fuzz", "", `{"cniVersion":"1.0.0","type":"bridge"}`, ""},
		{"fuzz,fuzz@data0", "", `{"cniVersion":"1.0.0","plugins":[{"type":"bridge"},{"type":"tuning"}]}`, ""},
		{`[{"name":"fuzz","mac":"02:00:00:00:00:01","ips":["10.0.0.2/24"],"cni-args":{"a":1}}]`, "", `{"type":"sriov"}`, "intel.com/vf"},
		{"fuzz", "", `{"cniVersion":"1.0.0","type":"multinet","binDir":"/bin","delegates":[{"type":"sh"}]}`, ""},
		{"", "default/fuzz", `null`, ""},
		{"fuzz", "", ``, ""},
		{strings.Repeat("fuzz,", 40) + "fuzz", "", `{"type":"bridge"}`, ""},
		{`[{"name":"fuzz","deviceID":"../../../class/net/eth0/device"}]`, "", `{"type":"sriov"}`, ""},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	dir := f.TempDir()
	confDir := filepath.Join(dir, "net.d")
	netDir := filepath.Join(dir, "networks")
	os.MkdirAll(confDir, 0o755)
	os.MkdirAll(netDir, 0o755)
	cluster := filepath.Join(confDir, "10-cbr0.conflist")
	os.WriteFile(cluster, []byte(`{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"bridge"}]}`), 0o644)
	if _, _, err := Generate(GenerateOptions{ConfDir: confDir}); err != nil {
		f.Fatal(err)
	}
	conf, err := LoadConfig([]byte(`{"name":"m","type":"multinet","clusterNetwork":"` + cluster + `","networkDir":"` + netDir + `","confDir":"` + confDir + `","maxAttachments":8}`))
	if err != nil {
		f.Fatal(err)
	}
	devices := func(context.Context, string, string, string, string) ([]string, error) {
		return []string{"0000:3b:02.1", "0000:3b:02.2"}, nil
	}
	f.Fuzz(func(t *testing.T, networks, defaultNet, config, resource string) {
		var ann map[string]string
		if resource != "" {
			ann = map[string]string{ResourceNameAnnot: resource}
		}
		if err := os.WriteFile(filepath.Join(netDir, "fuzz.json"), []byte(nadManifest("default", "fuzz", config, ann)), 0o644); err != nil {
			t.Fatal(err)
		}
		pod := podWith(networks)
		if defaultNet != "" {
			pod.Annotations[DefaultNetworkAnnot] = defaultNet
		}
		pl := &planner{conf: conf, nets: &dirNetworks{dir: netDir}, devices: devices}
		ds, err := pl.plan(context.Background(), pod, "uid-1", "eth0")
		if err != nil {
			return
		}
		if len(ds) > 1+conf.MaxAttachments {
			t.Fatalf("%d delegates, limit %d", len(ds), conf.MaxAttachments)
		}
		ifnames := map[string]bool{}
		for _, d := range ds {
			if typ := ownPluginType(d.Conf); typ != "" {
				t.Fatalf("delegate %s runs our own type %s", d.Name, typ)
			}
			l, err := libcni.ConfListFromBytes(d.Conf)
			if err != nil {
				t.Fatalf("delegate %s: accepted conf libcni cannot read: %v", d.Name, err)
			}
			for _, p := range l.Plugins {
				if ownType(p.Network.Type) {
					t.Fatalf("delegate %s: libcni reads plugin type %s", d.Name, p.Network.Type)
				}
			}
			if ifnames[d.IfName] {
				t.Fatalf("interface %s twice", d.IfName)
			}
			ifnames[d.IfName] = true
		}
	})
}

// FuzzDelegateConf feeds a NAD's spec.config to the conf loaders a delegate goes through. What
// is accepted is a JSON object libcni reads the same way we do: no plugin libcni would run is
// one of our own types.
func FuzzDelegateConf(f *testing.F) {
	for _, s := range []string{`{"cniVersion":"1.0.0","type":"bridge"}`, `{"plugins":[{"type":"bridge"},{"type":"multinet"}]}`,
		`null`, `[]`, `{"type":"multus-shim"}`, `{"Type":"multinet"}`, `{"type":"bridge","type":"multinet"}`,
		`{"name":"","plugins":[{"type":"sriov","deviceID":"x"}]}`} {
		f.Add([]byte(s))
	}
	confDir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		nad := nadFixture("default", "n", string(b))
		raw, err := nadConfig(nad, confDir)
		if err != nil {
			return
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(raw, &obj) != nil || obj == nil {
			t.Fatalf("accepted a conf that is not a JSON object: %s", raw)
		}
		list, _, err := asConfList(raw)
		if err != nil {
			return
		}
		l, err := libcni.ConfListFromBytes(list)
		if err != nil {
			t.Fatalf("asConfList made a conflist libcni cannot read: %v", err)
		}
		for _, p := range l.Plugins {
			if ownType(p.Network.Type) {
				t.Fatalf("accepted plugin type %q (libcni's reading) from %s", p.Network.Type, b)
			}
		}
		if _, err := editPlugins(list, func(p map[string]interface{}, first bool) { p["deviceID"] = "0000:3b:02.1" }); err != nil {
			t.Fatalf("editPlugins on an accepted conflist: %v", err)
		}
	})
}
