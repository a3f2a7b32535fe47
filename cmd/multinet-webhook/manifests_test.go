package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	admregv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// decodeAll reads every document of deploy/webhook/*.yaml into its kind.
func decodeAll(t *testing.T) map[string][][]byte {
	t.Helper()
	files, _ := filepath.Glob("../../deploy/webhook/*.yaml")
	docs := map[string][][]byte{}
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range bytes.Split(b, []byte("\n---\n")) {
			var tm struct{ Kind string }
			if err := yaml.Unmarshal(d, &tm); err != nil || tm.Kind == "" {
				t.Fatalf("%s: %v", f, err)
			}
			docs[tm.Kind] = append(docs[tm.Kind], d)
		}
	}
	return docs
}

func one[T any](t *testing.T, docs map[string][][]byte, kind string) []T {
	t.Helper()
	var out []T
	for _, d := range docs[kind] {
		var v T
		if err := yaml.UnmarshalStrict(d, &v); err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		t.Fatalf("no %s in deploy/webhook", kind)
	}
	return out
}

// The Deployment's flags, the names RBAC grants, the Service and the webhook configuration must
// agree, or the installed webhook cannot patch its caBundle or read its Secret: a typo here is
// found by this test, not by a cluster that denies every annotated pod.
func TestManifestsAgree(t *testing.T) {
	docs := decodeAll(t)
	dep := one[appsv1.Deployment](t, docs, "Deployment")[0]
	c := dep.Spec.Template.Spec.Containers[0]
	flags := map[string]string{}
	for _, a := range c.Args {
		k, v, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		flags[k] = v
	}
	if c.Image != "registry.local/multinet/multinet" || c.Command[0] != "multinet-webhook" {
		t.Errorf("image %s command %v", c.Image, c.Command)
	}
	if env := c.Env; len(env) == 0 || env[0].Name != "POD_NAMESPACE" || env[0].ValueFrom.FieldRef.FieldPath != "metadata.namespace" {
		t.Errorf("POD_NAMESPACE not from the downward API: %+v", env)
	}
	sa := one[corev1.ServiceAccount](t, docs, "ServiceAccount")[0]
	if dep.Spec.Template.Spec.ServiceAccountName != sa.Name {
		t.Errorf("Deployment runs as %q, ServiceAccount is %q", dep.Spec.Template.Spec.ServiceAccountName, sa.Name)
	}
	sec := one[corev1.Secret](t, docs, "Secret")[0]
	if sec.Name != flags["secret-name"] || sec.Namespace != dep.Namespace || len(sec.Data)+len(sec.StringData) != 0 {
		t.Errorf("Secret %s/%s (data %d) vs --secret-name %s in %s: want the same, shipped empty", sec.Namespace, sec.Name, len(sec.Data), flags["secret-name"], dep.Namespace)
	}
	svc := one[corev1.Service](t, docs, "Service")[0]
	if svc.Name != flags["service-name"] || svc.Spec.Selector["app.kubernetes.io/name"] != dep.Spec.Template.Labels["app.kubernetes.io/name"] {
		t.Errorf("Service %s selector %v vs --service-name %s, pod labels %v", svc.Name, svc.Spec.Selector, flags["service-name"], dep.Spec.Template.Labels)
	}
	mwc := one[admregv1.MutatingWebhookConfiguration](t, docs, "MutatingWebhookConfiguration")[0]
	if mwc.Name != flags["webhook-config-name"] {
		t.Errorf("configuration %s vs --webhook-config-name %s", mwc.Name, flags["webhook-config-name"])
	}
	w := mwc.Webhooks[0]
	if s := w.ClientConfig.Service; s == nil || s.Name != svc.Name || s.Namespace != svc.Namespace || *s.Path != "/mutate" {
		t.Errorf("clientConfig %+v does not reach Service %s/%s at /mutate", w.ClientConfig, svc.Namespace, svc.Name)
	}
	if len(w.MatchConditions) != 1 || !strings.Contains(w.MatchConditions[0].Expression, "k8s.v1.cni.cncf.io/networks") || *w.FailurePolicy != admregv1.Fail {
		t.Errorf("scope: matchConditions %+v failurePolicy %v", w.MatchConditions, *w.FailurePolicy)
	}

	// RBAC: exactly what the webhook calls, on its own objects.
	allowed := map[string][]string{}
	for _, kind := range []string{"ClusterRole", "Role"} {
		for _, r := range one[rbacv1.ClusterRole](t, docs, kind) {
			for _, rule := range r.Rules {
				for _, res := range rule.Resources {
					for _, v := range rule.Verbs {
						allowed[res+" "+v] = rule.ResourceNames
					}
				}
			}
		}
	}
	want := map[string][]string{
		"network-attachment-definitions get":   nil,
		"network-attachment-definitions list":  nil,
		"network-attachment-definitions watch": nil,
		"mutatingwebhookconfigurations get":    {mwc.Name},
		"mutatingwebhookconfigurations patch":  {mwc.Name},
		"secrets get":                          {sec.Name},
		"secrets update":                       {sec.Name},
	}
	for k, names := range want {
		got, ok := allowed[k]
		if !ok || !slices.Equal(got, names) {
			t.Errorf("RBAC %s: resourceNames %v (granted %v), want %v", k, got, ok, names)
		}
	}
	if len(allowed) != len(want) {
		t.Errorf("RBAC grants %v, want only %v", allowed, want)
	}
}
