package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	nadfake "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/clientset/versioned/fake"
	nadlisters "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/listers/k8s.cni.cncf.io/v1"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	admregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
)

const (
	resA = "intel.com/sriov_a"
	resB = "intel.com/sriov_b"
)

func nad(ns, name string, annots map[string]string) *nadv1.NetworkAttachmentDefinition {
	return &nadv1.NetworkAttachmentDefinition{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annots},
		Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: `{"cniVersion":"1.0.0","type":"sriov"}`},
	}
}

// nadClient returns a fake NAD clientset holding the test NADs. They are created through the
// client: objects given to NewSimpleClientset land under the guessed resource
// "networkattachmentdefinitions", not "network-attachment-definitions", and are never found.
func nadClient(t testing.TB) *nadfake.Clientset {
	c := nadfake.NewSimpleClientset()
	for _, n := range testNADs() {
		if _, err := c.K8sCniCncfIoV1().NetworkAttachmentDefinitions(n.Namespace).Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func testNADs() []*nadv1.NetworkAttachmentDefinition {
	return []*nadv1.NetworkAttachmentDefinition{
		nad("default", "sriov-a", map[string]string{"k8s.v1.cni.cncf.io/resourceName": resA}),
		nad("default", "sriov-a2", map[string]string{"k8s.v1.cni.cncf.io/resourceName": resA}),
		nad("other", "sriov-b", map[string]string{"k8s.v1.cni.cncf.io/resourceName": resB}),
		nad("default", "plain", nil),
		nad("default", "custom-key", map[string]string{"example.com/pool": "example.com/dev"}),
		nad("default", "zone-a", map[string]string{"k8s.v1.cni.cncf.io/resourceName": resA, "k8s.v1.cni.cncf.io/nodeSelector": "example.com/zone = a"}),
		nad("default", "zone-b", map[string]string{"k8s.v1.cni.cncf.io/nodeSelector": "example.com/zone=b"}),
		nad("default", "bad-resource", map[string]string{"k8s.v1.cni.cncf.io/resourceName": "sriov pool"}),
		nad("default", "bad-selector", map[string]string{"k8s.v1.cni.cncf.io/nodeSelector": "a=b=c"}),
	}
}

// server is the webhook behind a real HTTPS listener whose certificate comes from the
// CertManager, and a client that trusts only the caBundle the manager patched into the webhook
// configuration: what the API server does.
type server struct {
	url    string
	client *http.Client
}

func newServer(t *testing.T, m *Mutator) *server {
	t.Helper()
	kube := fake.NewSimpleClientset(webhookConfig("multinet-webhook", "pods.multinet.io"))
	certs := &CertManager{Kube: kube, Namespace: "multinet", SecretName: "multinet-webhook-tls", WebhookConfig: "multinet-webhook",
		DNSNames: []string{"multinet-webhook.multinet.svc"}, IPs: nil, CAValidity: 24 * time.Hour, CertValidity: time.Hour, Overlap: time.Minute}
	certs.DNSNames, certs.IPs = SANs("multinet-webhook", "multinet", []string{"127.0.0.1"})
	if err := certs.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if m.NADs == nil {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		c, err := StartNADCache(ctx, nadClient(t))
		if err != nil {
			t.Fatal(err)
		}
		m.NADs = c
	}
	url := serveTLS(t, &Handler{Mutator: m}, certs)
	cfg, err := kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), "multinet-webhook", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(cfg.Webhooks[0].ClientConfig.CABundle) {
		t.Fatalf("caBundle of the webhook configuration holds no certificate: %q", cfg.Webhooks[0].ClientConfig.CABundle)
	}
	return &server{url: url + MutatePath, client: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}}
}

// serveTLS serves h with the manager's certificate as Run does. (httptest would add its own
// certificate, and a client dialing an IP sends no SNI, so GetCertificate would never be asked.)
func serveTLS(t *testing.T, h http.Handler, certs *CertManager) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, TLSConfig: &tls.Config{GetCertificate: certs.GetCertificate}}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return "https://" + ln.Addr().String()
}

func webhookConfig(name string, hooks ...string) *admregv1.MutatingWebhookConfiguration {
	cfg := &admregv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, h := range hooks {
		cfg.Webhooks = append(cfg.Webhooks, admregv1.MutatingWebhook{Name: h})
	}
	return cfg
}

// review posts pod in an AdmissionReview as the API server would and returns the response.
func (s *server) review(t *testing.T, namespace string, pod *corev1.Pod) *admissionv1.AdmissionResponse {
	t.Helper()
	raw, _ := json.Marshal(pod)
	ar := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{UID: types.UID("uid-" + pod.Name), Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"}, Namespace: namespace, Name: pod.Name,
			Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw}},
	}
	body, _ := json.Marshal(ar)
	resp, err := s.client.Post(s.url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Response == nil {
		t.Fatalf("response (HTTP %d): %v", resp.StatusCode, err)
	}
	if out.Kind != "AdmissionReview" || out.APIVersion != "admission.k8s.io/v1" || out.Response.UID != ar.Request.UID {
		t.Fatalf("response is not an admission.k8s.io/v1 AdmissionReview for our request: %+v", out)
	}
	return out.Response
}

// admit reviews pod and returns it as the API server would store it after the patch.
func (s *server) admit(t *testing.T, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	resp := s.review(t, "default", pod)
	if !resp.Allowed {
		t.Fatalf("pod denied: %+v", resp.Result)
	}
	return applyPatch(t, pod, resp.Patch)
}

func applyPatch(t testing.TB, pod *corev1.Pod, patch []byte) *corev1.Pod {
	t.Helper()
	if len(patch) == 0 {
		return pod.DeepCopy()
	}
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		t.Fatalf("patch %s: %v", patch, err)
	}
	raw, _ := json.Marshal(pod)
	out, err := p.Apply(raw)
	if err != nil {
		t.Fatalf("apply patch %s: %v", patch, err)
	}
	var got corev1.Pod
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	return &got
}

func testPod(networks string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "cnf", Labels: map[string]string{"app": "cnf"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "app", Image: "app"},
			{Name: "sidecar", Image: "sidecar", VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}},
		}, Volumes: []corev1.Volume{{Name: "data"}}},
	}
	if networks != "" {
		p.Annotations = map[string]string{"k8s.v1.cni.cncf.io/networks": networks}
	}
	return p
}

// wantResources checks container 0's requests and limits of the network resources.
func wantResources(t *testing.T, pod *corev1.Pod, want map[string]int64) {
	t.Helper()
	c := pod.Spec.Containers[0]
	for _, res := range []string{resA, resB, "example.com/dev"} {
		n := want[res]
		r, hasR := c.Resources.Requests[corev1.ResourceName(res)]
		l, hasL := c.Resources.Limits[corev1.ResourceName(res)]
		if n == 0 {
			if hasR || hasL {
				t.Errorf("%s: requests %v limits %v, want none", res, r.String(), l.String())
			}
			continue
		}
		if !hasR || !hasL || r.Value() != n || l.Value() != n {
			t.Errorf("%s: requests %v limits %v, want %d each", res, c.Resources.Requests, c.Resources.Limits, n)
		}
	}
	for _, res := range []string{resA, resB} {
		if _, ok := pod.Spec.Containers[1].Resources.Limits[corev1.ResourceName(res)]; ok {
			t.Errorf("second container got %s", res)
		}
	}
}

func TestInjectsOneUnitPerNetwork(t *testing.T) {
	s := newServer(t, &Mutator{DownwardAPI: true})
	for _, tc := range []struct {
		name, networks string
		want           map[string]int64
	}{
		{"comma, one", "sriov-a", map[string]int64{resA: 1}},
		{"comma, two of one pool with ns and ifname", "sriov-a@data0, default/sriov-a2, other/sriov-b@data1", map[string]int64{resA: 2, resB: 1}},
		{"json, same NAD twice", `[{"name":"sriov-a"},{"name":"sriov-a","interface":"net5"},{"name":"sriov-b","namespace":"other"}]`, map[string]int64{resA: 2, resB: 1}},
		{"NAD without resourceName beside one with", "plain,sriov-a", map[string]int64{resA: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := s.admit(t, testPod(tc.networks))
			wantResources(t, got, tc.want)
		})
	}
}

func TestNoResourceNoPatch(t *testing.T) {
	s := newServer(t, &Mutator{DownwardAPI: true})
	for _, networks := range []string{"", "plain", `[{"name":"plain","interface":"x0"}]`} {
		resp := s.review(t, "default", testPod(networks))
		if !resp.Allowed || len(resp.Patch) != 0 || resp.PatchType != nil {
			t.Errorf("networks %q: allowed %v patch %s, want allowed without a patch", networks, resp.Allowed, resp.Patch)
		}
	}
}

func TestExistingResources(t *testing.T) {
	userPod := func() *corev1.Pod {
		p := testPod("sriov-a,sriov-a2,other/sriov-b")
		p.Spec.Containers[0].Resources = corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2")},
			Limits:   corev1.ResourceList{resA: resource.MustParse("1"), corev1.ResourceCPU: resource.MustParse("2")},
		}
		return p
	}
	t.Run("default: the user's value stands", func(t *testing.T) {
		got := newServer(t, &Mutator{}).admit(t, userPod())
		c := got.Spec.Containers[0].Resources
		if l := c.Limits[resA]; l.Value() != 1 {
			t.Errorf("%s limit %s, want the user's 1", resA, l.String())
		}
		if _, ok := c.Requests[resA]; ok {
			t.Errorf("%s request added beside the user's limit: %v", resA, c.Requests)
		}
		if r, l := c.Requests[resB], c.Limits[resB]; r.Value() != 1 || l.Value() != 1 {
			t.Errorf("%s: %v / %v, want 1", resB, c.Requests, c.Limits)
		}
		if cpu := c.Requests[corev1.ResourceCPU]; cpu.Value() != 2 {
			t.Errorf("cpu request changed: %v", c.Requests)
		}
	})
	t.Run("honor-resources: ours on top", func(t *testing.T) {
		got := newServer(t, &Mutator{HonorResources: true}).admit(t, userPod())
		c := got.Spec.Containers[0].Resources
		if r, l := c.Requests[resA], c.Limits[resA]; r.Value() != 3 || l.Value() != 3 {
			t.Errorf("%s requests %s limits %s, want 1+2=3 each", resA, r.String(), l.String())
		}
		if cpu := c.Limits[corev1.ResourceCPU]; cpu.Value() != 2 {
			t.Errorf("cpu limit changed: %v", c.Limits)
		}
	})
	t.Run("set on another container", func(t *testing.T) {
		p := testPod("sriov-a")
		p.Spec.Containers[1].Resources.Limits = corev1.ResourceList{resA: resource.MustParse("1")}
		got := newServer(t, &Mutator{}).admit(t, p)
		if _, ok := got.Spec.Containers[0].Resources.Limits[resA]; ok {
			t.Errorf("%s added to the first container though the second has it", resA)
		}
	})
}

func TestMissingNADDenied(t *testing.T) {
	s := newServer(t, &Mutator{})
	for _, networks := range []string{"sriov-a,tenant/nope@x", `[{"name":"sriov-a"},{"name":"nope","namespace":"tenant"}]`} {
		resp := s.review(t, "default", testPod(networks))
		if resp.Allowed || resp.Result == nil || !strings.Contains(resp.Result.Message, "tenant/nope") {
			t.Errorf("networks %q: allowed %v result %+v, want denied naming tenant/nope", networks, resp.Allowed, resp.Result)
		}
	}
	// The default-network annotation is read too (as upstream does).
	p := testPod("")
	p.Annotations = map[string]string{"v1.multus-cni.io/default-network": "gone"}
	if resp := s.review(t, "default", p); resp.Allowed || !strings.Contains(resp.Result.Message, "default/gone") {
		t.Errorf("default-network gone: %+v", resp.Result)
	}
}

func TestBadAnnotationDenied(t *testing.T) {
	s := newServer(t, &Mutator{})
	for networks, want := range map[string]string{
		`[{"name":"sriov-a"`: "not a JSON list",
		"a/b/c":              "more than one '/'",
		"Bad_Name":           "not a DNS-1123 name",
		`{"name":"sriov-a"}`: "wrapped in [ ]",
		"bad-resource":       `default/bad-resource: k8s.v1.cni.cncf.io/resourceName "sriov pool" is not an extended resource name`,
	} {
		resp := s.review(t, "default", testPod(networks))
		if resp.Allowed || resp.Result == nil || !strings.Contains(resp.Result.Message, want) ||
			!strings.Contains(resp.Result.Message, "k8s.v1.cni.cncf.io/") {
			t.Errorf("networks %q: %+v, want denied with %q", networks, resp.Result, want)
		}
	}
}

func TestDownwardAPIVolume(t *testing.T) {
	t.Run("enabled", func(t *testing.T) {
		got := newServer(t, &Mutator{DownwardAPI: true}).admit(t, testPod("sriov-a"))
		var vol *corev1.Volume
		for i := range got.Spec.Volumes {
			if got.Spec.Volumes[i].Name == "podnetinfo" {
				vol = &got.Spec.Volumes[i]
			}
		}
		if vol == nil || vol.DownwardAPI == nil {
			t.Fatalf("no podnetinfo downward-API volume: %+v", got.Spec.Volumes)
		}
		files := map[string]string{}
		for _, it := range vol.DownwardAPI.Items {
			files[it.Path] = it.FieldRef.FieldPath
		}
		if files["annotations"] != "metadata.annotations" || files["labels"] != "metadata.labels" || len(files) != 2 {
			t.Errorf("podnetinfo files %v", files)
		}
		if len(got.Spec.Volumes) != 2 {
			t.Errorf("the pod's own volume lost: %+v", got.Spec.Volumes)
		}
		for _, c := range got.Spec.Containers {
			n := 0
			for _, m := range c.VolumeMounts {
				if m.Name == "podnetinfo" && m.MountPath == "/etc/podnetinfo" && m.ReadOnly {
					n++
				}
			}
			if n != 1 {
				t.Errorf("container %s mounts %+v, want podnetinfo at /etc/podnetinfo once", c.Name, c.VolumeMounts)
			}
		}
		// A second pass (the API server may call a webhook again) adds nothing twice.
		again := newServer(t, &Mutator{DownwardAPI: true, HonorResources: false}).admit(t, got)
		if len(again.Spec.Volumes) != 2 || len(again.Spec.Containers[1].VolumeMounts) != 2 {
			t.Errorf("reinvocation duplicated: volumes %+v", again.Spec.Volumes)
		}
		wantResources(t, again, map[string]int64{resA: 1})
	})
	t.Run("disabled", func(t *testing.T) {
		got := newServer(t, &Mutator{}).admit(t, testPod("sriov-a"))
		if len(got.Spec.Volumes) != 1 || len(got.Spec.Containers[0].VolumeMounts) != 0 {
			t.Errorf("volume added though disabled: %+v", got.Spec.Volumes)
		}
	})
	t.Run("hugepages", func(t *testing.T) {
		p := testPod("sriov-a")
		p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{"hugepages-1Gi": resource.MustParse("2Gi")}
		p.Spec.Containers[0].Resources.Requests = corev1.ResourceList{"hugepages-1Gi": resource.MustParse("2Gi")}
		got := newServer(t, &Mutator{DownwardAPI: true, HugepagesDownwardAPI: true}).admit(t, p)
		files := map[string]string{}
		for _, v := range got.Spec.Volumes {
			if v.Name == "podnetinfo" {
				for _, it := range v.DownwardAPI.Items {
					if it.ResourceFieldRef != nil {
						files[it.Path] = it.ResourceFieldRef.Resource + "@" + it.ResourceFieldRef.ContainerName + "/" + it.ResourceFieldRef.Divisor.String()
					}
				}
			}
		}
		if files["hugepages_1G_request_app"] != "requests.hugepages-1Gi@app/1Mi" || files["hugepages_1G_limit_app"] != "limits.hugepages-1Gi@app/1Mi" || len(files) != 2 {
			t.Errorf("hugepages files %v", files)
		}
		if env := got.Spec.Containers[0].Env; len(env) != 1 || env[0].Name != "CONTAINER_NAME" || env[0].Value != "app" {
			t.Errorf("env %+v, want CONTAINER_NAME=app", env)
		}
		wantResources(t, got, map[string]int64{resA: 1})
	})
}

func TestResourceNameKeys(t *testing.T) {
	s := newServer(t, &Mutator{ResourceNameKeys: []string{"k8s.v1.cni.cncf.io/resourceName", "example.com/pool"}})
	wantResources(t, s.admit(t, testPod("custom-key,sriov-a")), map[string]int64{resA: 1, "example.com/dev": 1})
	s = newServer(t, &Mutator{})
	wantResources(t, s.admit(t, testPod("custom-key,sriov-a")), map[string]int64{resA: 1})
}

func TestNamespaceFromRequest(t *testing.T) {
	// A pod made by a ReplicaSet has no namespace in its body; "sriov-b" must be looked up in
	// the request's namespace.
	s := newServer(t, &Mutator{})
	resp := s.review(t, "other", testPod("sriov-b"))
	if !resp.Allowed {
		t.Fatalf("denied: %+v", resp.Result)
	}
	wantResources(t, applyPatch(t, testPod("sriov-b"), resp.Patch), map[string]int64{resB: 1})
}

type panicky struct{}

func (panicky) Get(string, string) (*nadv1.NetworkAttachmentDefinition, error) { panic("boom") }

func TestPanicDeniesOnePodOnly(t *testing.T) {
	s := newServer(t, &Mutator{NADs: panicky{}})
	for i := 0; i < 2; i++ { // the server survives the first
		resp := s.review(t, "default", testPod("sriov-a"))
		if resp.Allowed || !strings.Contains(resp.Result.Message, "internal error: boom") {
			t.Fatalf("attempt %d: %+v", i, resp.Result)
		}
	}
	if resp := s.review(t, "default", testPod("")); !resp.Allowed {
		t.Errorf("pod without networks denied: %+v", resp.Result)
	}
}

func TestNADCacheFallsBackToAPI(t *testing.T) {
	// The informer has not seen the NAD yet (created a moment before the pod): the API server is
	// asked before the pod is denied.
	client := nadClient(t)
	c := &NADCache{Lister: nadlisters.NewNetworkAttachmentDefinitionLister(cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})), Client: client}
	got := newServer(t, &Mutator{NADs: c}).admit(t, testPod("sriov-a"))
	wantResources(t, got, map[string]int64{resA: 1})
}

func TestNotAPod(t *testing.T) {
	s := newServer(t, &Mutator{})
	body := `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`
	resp, err := s.client.Post(s.url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("review without a request: HTTP %d, want 400", resp.StatusCode)
	}
}

func TestNADNodeSelector(t *testing.T) {
	s := newServer(t, &Mutator{})
	p := testPod("zone-a")
	p.Spec.NodeSelector = map[string]string{"kubernetes.io/os": "linux"}
	got := s.admit(t, p)
	if len(got.Spec.NodeSelector) != 2 || got.Spec.NodeSelector["example.com/zone"] != "a" || got.Spec.NodeSelector["kubernetes.io/os"] != "linux" {
		t.Errorf("nodeSelector %v, want the pod's and the NAD's", got.Spec.NodeSelector)
	}
	wantResources(t, got, map[string]int64{resA: 1})
	if got := s.admit(t, testPod("zone-b")); got.Spec.NodeSelector["example.com/zone"] != "b" {
		t.Errorf("NAD without resourceName: nodeSelector %v", got.Spec.NodeSelector)
	}
	for networks, want := range map[string]string{
		"zone-a,zone-b": "default/zone-b needs nodes with example.com/zone=b, but default/zone-a needs example.com/zone=a",
		"bad-selector":  "more than one label",
	} {
		if resp := s.review(t, "default", testPod(networks)); resp.Allowed || !strings.Contains(resp.Result.Message, want) {
			t.Errorf("%s: %+v, want denied with %q", networks, resp.Result, want)
		}
	}
	p = testPod("zone-a")
	p.Spec.NodeSelector = map[string]string{"example.com/zone": "c"}
	if resp := s.review(t, "default", p); resp.Allowed || !strings.Contains(resp.Result.Message, "the pod's nodeSelector says example.com/zone=c") {
		t.Errorf("pod's own selector contradicted: %+v", resp.Result)
	}
}
