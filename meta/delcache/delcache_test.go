package delcache

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// A record as the thin binary of the previous release wrote it: the agent and the shim must
// read it unchanged (the upgrade path deletes pods attached before it).
const thinRecord = `{"containerID":"c1","netns":"/var/run/netns/p1","ifname":"eth0","podNamespace":"default","podName":"web",` +
	`"podUID":"u1","cniArgs":[["IgnoreUnknown","1"],["K8S_POD_NAME","web"]],"delegates":[{"name":"cbr0","ifname":"eth0","default":true,` +
	`"conf":{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"bridge"}]}},{"name":"default/sriov-net","ifname":"net1",` +
	`"conf":{"cniVersion":"1.0.0","name":"sriov-net","plugins":[{"type":"sriov","deviceID":"0000:00:12.1"}]},` +
	`"resourceName":"intel.com/vf","deviceID":"0000:00:12.1","args":[["MAC","02:00:00:00:00:01"]]}]}`

func TestLoadsThinRecordAndWritesItBack(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "delegates"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(Path(dir, "c1"), []byte(thinRecord), 0o600); err != nil {
		t.Fatal(err)
	}
	e, err := Load(dir, "c1")
	if err != nil || e == nil {
		t.Fatalf("load: %v %v", e, err)
	}
	if e.PodName != "web" || len(e.Delegates) != 2 || e.Delegates[1].DeviceID != "0000:00:12.1" || e.Delegates[1].Args[0][1] != "02:00:00:00:00:01" {
		t.Fatalf("record read wrong: %+v", e)
	}
	rc := e.Delegates[1].RuntimeConf("c1", e.NetNS, e.CNIArgs)
	if want := [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", "web"}, {"MAC", "02:00:00:00:00:01"}}; !reflect.DeepEqual(rc.Args, want) || rc.IfName != "net1" {
		t.Fatalf("runtime conf %+v", rc)
	}
	if err := Save(dir, e); err != nil {
		t.Fatal(err)
	}
	again, err := Load(dir, "c1")
	if err != nil || !reflect.DeepEqual(again, e) {
		t.Fatalf("round trip changed the record: %+v %v", again, err)
	}
	if ids := Containers(dir); len(ids) != 1 || ids[0] != "c1" {
		t.Fatalf("containers %v", ids)
	}
	Remove(dir, "c1")
	if e, err := Load(dir, "c1"); e != nil || err != nil {
		t.Fatalf("after remove: %v %v", e, err)
	}
}

func TestLoadRefusesPathInContainerID(t *testing.T) {
	if _, err := Load(t.TempDir(), "../../etc/x"); err == nil {
		t.Fatal("a container ID with a path was read")
	}
}

func TestOwnPluginTypeFindsNestedTypes(t *testing.T) {
	for conf, want := range map[string]string{
		`{"plugins":[{"type":"bridge","ipam":{"type":"multinet-shim"}}]}`: "multinet-shim",
		`{"type":"macvlan","delegate":{"TYPE":"multus"}}`:                 "multus",
		`{"plugins":[{"type":"bridge"}]}`:                                 "",
	} {
		if got := OwnPluginType([]byte(conf)); got != want {
			t.Errorf("%s: got %q, want %q", conf, got, want)
		}
	}
}
