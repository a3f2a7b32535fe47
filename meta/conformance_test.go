package meta

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/multinet-io/multinet/conformance"
	"github.com/multinet-io/multinet/devinfo"
)

// TestConformanceSelection runs Multus's and the NAD client's annotation cases through
// ParseSelection, and the cases about what happens after parsing (namespace isolation, cni-args
// merging) through the planner.
func TestConformanceSelection(t *testing.T) {
	conformance.Run(t, "multus-selection.json", judgeSelection)
}

func judgeSelection(t *testing.T, c conformance.Case) conformance.Outcome {
	if c.Str("input_kind") == "cni-args-merge" {
		return judgeCNIArgsMerge(t, c)
	}
	sels, err := ParseSelection(c.Str("annotation"), c.Str("pod_namespace"))
	if c.ExpectError() && strings.Contains(c.Str("error_contains"), "no kubernetes network found") {
		// Multus's NoK8sNetworkError, which its callers read as "no additional networks".
		if err != nil || len(sels) > 0 {
			return conformance.Differs("err %v, networks %s; want no networks", err, selectionsJSON(sels))
		}
		return conformance.Same()
	}
	if c.ExpectError() {
		if err == nil {
			return conformance.Differs("accepted, as %s", selectionsJSON(sels))
		}
		return conformance.Same()
	}
	if err != nil {
		return conformance.Differs("refused: %v", err)
	}
	var want []map[string]any
	if err := c.Decode("networks", &want); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal([]byte(selectionsJSON(sels)), &got); err != nil {
		t.Fatal(err)
	}
	if want == nil {
		want = []map[string]any{}
	}
	if !reflect.DeepEqual(got, want) {
		return conformance.Differs("parsed as %s, upstream %s", selectionsJSON(sels), mustJSON(want))
	}
	var iso []struct {
		Netconf map[string]any `json:"netconf"`
		Expect  string         `json:"expect"`
	}
	if err := c.Decode("namespace_isolation", &iso); err != nil {
		t.Fatal(err)
	}
	for _, n := range iso {
		if err := planIsolation(t, n.Netconf, c.Str("pod_namespace"), c.Str("annotation"), sels); (err != nil) != (n.Expect == "error") {
			return conformance.Differs("namespace isolation with %v: err = %v, upstream %s", n.Netconf, err, n.Expect)
		}
	}
	return conformance.Same()
}

// selectionsJSON renders parsed selections with the corpus's keys: a field only when set, and
// default-route also when set but empty (upstream tells nil from empty; so does the planner).
func selectionsJSON(sels []Selection) string {
	out := []map[string]any{}
	for _, s := range sels {
		var m map[string]any
		b, _ := json.Marshal(s)
		_ = json.Unmarshal(b, &m)
		if s.DefaultRoute != nil {
			m["default-route"] = s.DefaultRoute
		}
		out = append(out, m)
	}
	return mustJSON(out)
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// planIsolation plans a pod with the annotation under a netconf's namespace options; every
// network the annotation names exists, so only the isolation rule can refuse it.
func planIsolation(t *testing.T, netconf map[string]any, podNS, annotation string, sels []Selection) error {
	nads := map[string]string{}
	for i, s := range sels {
		nads[fmt.Sprintf("nad%d", i)] = fmt.Sprintf("apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n  config: '{\"cniVersion\":\"1.0.0\",\"type\":\"bridge\"}'\n", s.Name, s.Namespace)
	}
	conf, nets := standalone(t, nads)
	nc := map[string]any{"name": "m", "type": "multinet", "clusterNetwork": "cbr0"}
	for k, v := range netconf {
		nc[k] = v
	}
	b, _ := json.Marshal(nc)
	opts, err := LoadConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	conf.NamespaceIsolation, conf.GlobalNamespaces = opts.NamespaceIsolation, opts.GlobalNamespaces
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: podNS, Name: "p", UID: "u", Annotations: map[string]string{NetworksAnnot: annotation}}}
	_, err = (&planner{conf: conf, nets: nets}).plan(context.Background(), pod, "u", "eth0")
	return err
}

func judgeCNIArgsMerge(t *testing.T, c conformance.Case) conformance.Outcome {
	var el Selection
	if err := c.Decode("element", &el); err != nil {
		t.Fatal(err)
	}
	el.Namespace = "default"
	conf, nets := standalone(t, map[string]string{"nad": "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: " + el.Name +
		"\n  namespace: default\nspec:\n  config: '" + strings.ReplaceAll(c.Str("delegate_conf"), "\n", " ") + "'\n"})
	d, err := (&planner{conf: conf, nets: nets}).attachment(context.Background(), el)
	if err != nil {
		return conformance.Differs("refused: %v", err)
	}
	var list struct {
		Plugins []struct {
			Args struct {
				CNI map[string]any `json:"cni"`
			} `json:"args"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(d.Conf, &list); err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	if err := c.Decode("expected_args_cni", &want); err != nil {
		t.Fatal(err)
	}
	for i, p := range list.Plugins {
		if !reflect.DeepEqual(p.Args.CNI, want) {
			return conformance.Differs("plugin %d args.cni = %v, upstream %v", i, p.Args.CNI, want)
		}
	}
	return conformance.Same()
}

// TestConformanceNetworkStatus runs the NAD client's network-status cases through the
// meta-plugin's status building (Plugin.statuses: what ADD writes to the pod), from the CNI
// result as a delegate prints it.
func TestConformanceNetworkStatus(t *testing.T) {
	conformance.Run(t, "network-status.json", judgeStatus)
}

func judgeStatus(t *testing.T, c conformance.Case) conformance.Outcome {
	switch c.Str("function") {
	case "SetNetworkStatus":
		return judgeSetStatus(t, c)
	case "doc-sample":
		var sample []nadv1.NetworkStatus
		if err := c.Decode("annotation_sample", &sample); err != nil {
			return conformance.Differs("our status type does not read the documented annotation: %v", err)
		}
		var raw []map[string]any
		_ = c.Decode("annotation_sample", &raw)
		var back []map[string]any
		_ = json.Unmarshal([]byte(mustJSON(sample)), &back)
		if !reflect.DeepEqual(raw, back) {
			return conformance.Differs("documented annotation reads back as %s", mustJSON(sample))
		}
		return conformance.Same()
	}
	var res map[string]any
	if err := c.Decode("cni_result", &res); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(res)
	cniVersion, _ := res["cniVersion"].(string)
	var r100 *types100.Result
	parsed, err := version.NewResult(cniVersion, b)
	if err == nil {
		r100, err = types100.NewResultFromResult(parsed)
	}
	if c.ExpectError() {
		if err == nil {
			return conformance.Differs("result accepted")
		}
		return conformance.Same()
	}
	if err != nil {
		return conformance.Differs("result refused: %v", err)
	}
	p := &Plugin{DevInfo: devinfo.Dir(t.TempDir())}
	d := Delegate{Name: c.Str("network_name")}
	_ = c.Decode("default", &d.IsDefault)
	var info *nadv1.DeviceInfo
	if err := c.Decode("device_info", &info); err != nil {
		t.Fatal(err)
	}
	if info != nil && info.Type != "" {
		// The device plugin's device-info file is where a status's device-info comes from.
		d.ResourceName, d.DeviceID = "example.com/res", info.Pci.PciAddress
		if err := devinfo.Save(p.DevInfo.DPPath(d.ResourceName, d.DeviceID), info); err != nil {
			t.Fatal(err)
		}
	}
	sts, err := p.statuses("cid", []Delegate{d}, []*types100.Result{r100}, nil)
	if err != nil {
		return conformance.Differs("refused: %v", err)
	}
	var want any
	if err := c.Decode("expected_status", &want); err != nil {
		t.Fatal(err)
	}
	if one, ok := want.(map[string]any); ok {
		want = []any{one} // CreateNetworkStatus (one entry) is what we write for such a result
	}
	wantList, _ := want.([]any)
	for _, w := range wantList {
		// An empty device-info is an artefact of the test passing &DeviceInfo{}; the
		// meta-plugin has no device-info to report there, as Multus passes none.
		if m, ok := w.(map[string]any); ok && reflect.DeepEqual(m["device-info"], map[string]any{}) {
			delete(m, "device-info")
		}
	}
	var got []any
	_ = json.Unmarshal([]byte(mustJSON(sts)), &got)
	if got == nil {
		got = []any{}
	}
	if wantList == nil {
		wantList = []any{}
	}
	if !reflect.DeepEqual(got, wantList) {
		return conformance.Differs("status %s, upstream %s", mustJSON(got), mustJSON(wantList))
	}
	return conformance.Same()
}

// judgeSetStatus writes the statuses to a pod the way the meta-plugin does with an API server,
// and compares the annotation text.
func judgeSetStatus(t *testing.T, c conformance.Case) conformance.Outcome {
	var sts []nadv1.NetworkStatus
	if err := c.Decode("statuses", &sts); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "p", Annotations: map[string]string{}}}
	kube := fake.NewSimpleClientset(pod)
	if err := (&apiNetworks{kube: kube}).SetStatus(context.Background(), pod, "cid", sts); err != nil {
		return conformance.Differs("refused: %v", err)
	}
	got, err := kube.CoreV1().Pods("default").Get(context.Background(), "p", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	key := c.Str("expected_annotation_key")
	if a := got.Annotations[key]; a != c.Str("expected_annotation") {
		return conformance.Differs("annotation %s = %q, upstream %q", key, a, c.Str("expected_annotation"))
	}
	return conformance.Same()
}
