package cniargs

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseGetPod(t *testing.T) {
	s := "IgnoreUnknown=1; K8S_POD_NAMESPACE=default;K8S_POD_NAME=cnf-1;MULTINET_NETWORKS=a@net1,b=c;MAC= 02:00:00:00:00:01 ;MAC=x;junk;=v"
	want := map[string]string{"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "cnf-1",
		"MULTINET_NETWORKS": "a@net1,b=c", "MAC": "x"}
	if got := Parse(s); !reflect.DeepEqual(got, want) {
		t.Errorf("Parse = %v, want %v", got, want)
	}
	if got := Get(s, "MAC"); got != "02:00:00:00:00:01" {
		t.Errorf("Get MAC = %q: want the first, trimmed", got)
	}
	if got := Get(s, "K8S_POD_UID"); got != "" {
		t.Errorf("absent key = %q", got)
	}
	if got := Pod(s); got != "default/cnf-1" {
		t.Errorf("Pod = %q", got)
	}
	if got := Pod("K8S_POD_NAMESPACE=x"); got != "" {
		t.Errorf("Pod without a name = %q", got)
	}
}

// CNI_ARGS comes from the runtime and, in standalone mode, carries a pod's selection: no input
// may panic, every key is trimmed and non-empty, and Get finds exactly the keys Parse finds.
func FuzzParse(f *testing.F) {
	f.Add("K8S_POD_NAMESPACE=default;K8S_POD_NAME=p;MULTINET_NETWORKS=a,b")
	f.Add(" = ;;==;K= v ;K=w")
	f.Fuzz(func(t *testing.T, s string) {
		m := Parse(s)
		for k, v := range m {
			if k == "" || strings.TrimSpace(k) != k {
				t.Fatalf("key %q from %q", k, s)
			}
			if strings.TrimSpace(v) != "" && Get(s, k) == "" && strings.Count(s, k) == 1 {
				t.Fatalf("Get(%q, %q) empty, Parse has %q", s, k, v)
			}
		}
		_ = Pod(s)
	})
}
