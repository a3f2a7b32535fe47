package meta

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseSelectionCommaForm(t *testing.T) {
	sels, err := ParseSelection(" macvlan-conf, other-ns/net-b@data0 ,net-c@net9,/net-d@", "pods")
	if err != nil {
		t.Fatal(err)
	}
	want := []Selection{
		{Name: "macvlan-conf", Namespace: "pods"},
		{Name: "net-b", Namespace: "other-ns", Interface: "data0"},
		{Name: "net-c", Namespace: "pods", Interface: "net9"},
		{Name: "net-d", Namespace: "pods"}, // empty namespace and interface: not given, as in Multus
	}
	if !reflect.DeepEqual(sels, want) {
		t.Fatalf("got %+v\nwant %+v", sels, want)
	}
}

func TestParseSelectionJSONForm(t *testing.T) {
	sels, err := ParseSelection(`[{"name":"net-a"},{"name":"sriov","namespace":"telco","interface":"n3","ips":["10.1.1.5/24"],
	  "mac":"02:00:00:00:00:01","default-route":["10.1.1.1"],"cni-args":{"k":"v"},"deviceID":"0000:3b:02.1",
	  "portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}],"bandwidth":{"ingressRate":1000,"ingressBurst":10,"egressRate":1000,"egressBurst":10}}]`, "pods")
	if err != nil {
		t.Fatal(err)
	}
	if len(sels) != 2 || sels[0].Namespace != "pods" || sels[1].Namespace != "telco" || sels[1].Interface != "n3" ||
		sels[1].DeviceID != "0000:3b:02.1" || sels[1].CNIArgs["k"] != "v" || sels[1].PortMappings[0].HostPort != 8080 ||
		sels[1].Bandwidth.IngressRate != 1000 || sels[1].DefaultRoute[0] != "10.1.1.1" {
		t.Fatalf("got %+v", sels)
	}
}

func TestParseSelectionRejects(t *testing.T) {
	cases := map[string]string{
		"Upper_Case":                           "not a DNS-1123 name",
		"a/b/c":                                "more than one '/'",
		"net@this-is-sixteen1":                 "interface name",
		`[{"name":"a","ips":["300.1.1.1"]}]`:   "ips",
		`[{"name":"a","mac":"zz"}]`:            "mac",
		`[{"interface":"x"}]`:                  "no network name",
		`[{"name":"a","default-route":["x"]}]`: "default-route",
		`[{"name":"a"`:                         "not a JSON list",
		"net-a,,net-b":                         "element 2",
	}
	for in, want := range cases {
		_, err := ParseSelection(in, "default")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want it to mention %q", in, err, want)
		}
	}
}

func TestLoadConfig(t *testing.T) {
	c, err := LoadConfig([]byte(`{"cniVersion":"1.1.0","name":"m","type":"multinet","clusterNetwork":"cbr0",
	  "globalNamespaces":"default, shared","multusNamespace":"net-system"}`))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.GlobalNamespaces, []string{"default", "shared"}) || c.MultinetNamespace != "net-system" ||
		!reflect.DeepEqual(c.SystemNamespaces, []string{"kube-system"}) || c.ConfDir != DefaultConfDir {
		t.Fatalf("config = %+v", c)
	}
	c, err = LoadConfig([]byte(`{"name":"m","type":"multinet","clusterNetwork":"x","globalNamespaces":["a"],"systemNamespaces":[]}`))
	if err != nil || len(c.SystemNamespaces) != 0 || c.GlobalNamespaces[0] != "a" {
		t.Fatalf("config = %+v, %v", c, err)
	}
	for in, want := range map[string]string{
		`{"name":"m","type":"multinet"}`:                                      "needs clusterNetwork or delegates",
		`{"name":"m","clusterNetwork":"a","delegates":[{"type":"bridge"}]}`:   "exclusive",
		`{"name":"m","clusterNetwork":"a","kubeconfig":"k","networkDir":"d"}`: "exclusive",
		`{"name":"m","delegates":[{"name":"x"}]}`:                             "no type",
		`{"name":"m","clusterNetwork":"a","logLevel":"loud"}`:                 "logLevel",
		`{"name":"m","clusterNetwork":"a","globalNamespaces":5}`:              "globalNamespaces",
		`not json`: "multinet config",
	} {
		if _, err := LoadConfig([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", in, err, want)
		}
	}
}

func FuzzParseSelection(f *testing.F) {
	for _, s := range []string{"a,b", "ns/a@net1", `[{"name":"a","ips":["1.2.3.4/24"]}]`, `{"name":"x"}`, ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sels, err := ParseSelection(s, "default")
		if err != nil {
			return
		}
		for _, sel := range sels {
			// Whatever parses must be safe to use as names and interface names.
			if !dns1123Subdomain.MatchString(sel.Name) || !dns1123Label.MatchString(sel.Namespace) {
				t.Fatalf("accepted bad name %q/%q from %q", sel.Namespace, sel.Name, s)
			}
			if sel.Interface != "" && !ifnameOK(sel.Interface) {
				t.Fatalf("accepted bad interface %q from %q", sel.Interface, s)
			}
		}
	})
}

func FuzzLoadConfig(f *testing.F) {
	for _, s := range []string{`{"name":"m","type":"multinet","clusterNetwork":"cbr0"}`,
		`{"name":"m","delegates":[{"type":"bridge","masterplugin":true}],"globalNamespaces":"a,b"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := LoadConfig(b)
		if err != nil {
			return
		}
		if c.ClusterNetwork == "" && len(c.Delegates) == 0 {
			t.Fatalf("accepted a config with no cluster network: %s", b)
		}
		if c.ConfDir == "" || c.CacheDir == "" || c.MultinetNamespace == "" {
			t.Fatalf("defaults not applied: %+v", c)
		}
	})
}

// A NAD is a custom resource: its name is a DNS-1123 subdomain, dots allowed ("sriov.net-a" is
// a valid NAD and Multus attaches it from the JSON form). Namespaces stay labels.
func TestParseSelectionDottedNADName(t *testing.T) {
	for _, in := range []string{`[{"name":"sriov.net-a","namespace":"telco"}]`, "telco/sriov.net-a@data0"} {
		sels, err := ParseSelection(in, "pods")
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if len(sels) != 1 || sels[0].Name != "sriov.net-a" || sels[0].Namespace != "telco" {
			t.Errorf("%q: got %+v", in, sels)
		}
	}
	for _, in := range []string{`[{"name":"a..b"}]`, `[{"name":".a"}]`, `[{"name":"a","namespace":"x.y"}]`} {
		if _, err := ParseSelection(in, "pods"); err == nil {
			t.Errorf("%q: accepted", in)
		}
	}
}

// Multus still honours the pre-3.2 "interfaceRequest" key; "interface" wins when both are set.
func TestParseSelectionInterfaceRequest(t *testing.T) {
	sels, err := ParseSelection(`[{"name":"a","interfaceRequest":"eth9"},{"name":"b","interface":"eth1","interfaceRequest":"eth9"}]`, "pods")
	if err != nil {
		t.Fatal(err)
	}
	if sels[0].Interface != "eth9" || sels[1].Interface != "eth1" {
		t.Fatalf("interfaces = %q, %q; want eth9, eth1", sels[0].Interface, sels[1].Interface)
	}
	if _, err := ParseSelection(`[{"name":"a","interfaceRequest":"this-is-sixteen1"}]`, "pods"); err == nil {
		t.Fatal("an over-long interfaceRequest was accepted")
	}
}

func TestParseSelectionCommaFormTrimsParts(t *testing.T) {
	sels, err := ParseSelection(" ns1 / net1 @ eth1 , net2 @ eth2", "pods")
	if err != nil {
		t.Fatal(err)
	}
	want := []Selection{{Name: "net1", Namespace: "ns1", Interface: "eth1"}, {Name: "net2", Namespace: "pods", Interface: "eth2"}}
	if !reflect.DeepEqual(sels, want) {
		t.Fatalf("got %+v\nwant %+v", sels, want)
	}
}

func TestParseSelectionInfinibandGUID(t *testing.T) {
	if _, err := ParseSelection(`[{"name":"a","infiniband-guid":"24:8a:07:03:00:8d:ae:2e"}]`, "pods"); err != nil {
		t.Fatalf("an EUI-64 GUID was refused: %v", err)
	}
	_, err := ParseSelection(`[{"name":"a","infiniband-guid":"24:8a:07:03:00:8d:ae"}]`, "pods")
	if err == nil || !strings.Contains(err.Error(), "infiniband-guid") {
		t.Fatalf("a 7-byte GUID: err = %v, want an infiniband-guid error", err)
	}
}

// Multus refuses a bare object; a manifest that works here must work there too.
func TestParseSelectionRefusesBareObject(t *testing.T) {
	_, err := ParseSelection(`{"name":"net1"}`, "pods")
	if err == nil || !strings.Contains(err.Error(), "wrapped in [ ]") {
		t.Fatalf("err = %v, want a refusal that says to wrap it in a list", err)
	}
}
