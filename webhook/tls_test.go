package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func day(n float64) time.Duration    { return time.Duration(n * float64(24*time.Hour)) }
func hasAction(a []k8stesting.Action, verb, res string) bool {
	for _, x := range a {
		if x.GetVerb() == verb && x.GetResource().Resource == res {
			return true
		}
	}
	return false
}

func newManager(kube *fake.Clientset, c *clock) *CertManager {
	dns, ips := SANs("multinet-webhook", "multinet", []string{"127.0.0.1"})
	return &CertManager{Kube: kube, Namespace: "multinet", SecretName: "multinet-webhook-tls", WebhookConfig: "multinet-webhook",
		DNSNames: dns, IPs: ips, CAValidity: day(30), CertValidity: day(9), Overlap: 10 * time.Minute, Now: c.now}
}

func caBundle(t *testing.T, kube *fake.Clientset) [][]byte {
	t.Helper()
	cfg, err := kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), "multinet-webhook", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, w := range cfg.Webhooks {
		out = append(out, w.ClientConfig.CABundle)
	}
	return out
}

// verify checks the served certificate as the API server would: against caBundle, for the
// service's DNS name and for 127.0.0.1, at the given time.
func verify(t *testing.T, bundle []byte, leaf *tls.Certificate, at time.Time) error {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(bundle)
	c, err := x509.ParseCertificate(leaf.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"multinet-webhook.multinet.svc", "127.0.0.1"} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, DNSName: name, CurrentTime: at}); err != nil {
			return err
		}
	}
	return nil
}

func served(t *testing.T, m *CertManager) *tls.Certificate {
	t.Helper()
	c, err := m.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCertManagerCreatesSecretAndPatchesCABundle(t *testing.T) {
	kube := fake.NewSimpleClientset(webhookConfig("multinet-webhook", "pods.multinet.io", "other.multinet.io"))
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := newManager(kube, c)
	if _, err := m.GetCertificate(nil); err == nil {
		t.Fatal("a certificate before the first sync")
	}
	if err := m.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	sec, err := kube.CoreV1().Secrets("multinet").Get(context.Background(), "multinet-webhook-tls", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{SecretCACert, SecretCAKey, SecretCert, SecretKey, SecretBundle} {
		if len(sec.Data[k]) == 0 {
			t.Errorf("secret has no %s", k)
		}
	}
	bundles := caBundle(t, kube)
	for i, b := range bundles {
		if !bytes.Equal(b, sec.Data[SecretBundle]) {
			t.Errorf("webhook %d caBundle is not the secret's bundle", i)
		}
	}
	if err := verify(t, bundles[0], served(t, m), c.t); err != nil {
		t.Fatalf("served certificate does not verify against caBundle: %v", err)
	}

	// A second replica (or a restart) serves from the same secret and writes nothing.
	kube.ClearActions()
	m2 := newManager(kube, c)
	if err := m2.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(served(t, m2).Certificate[0], served(t, m).Certificate[0]) {
		t.Error("second replica serves another certificate")
	}
	if hasAction(kube.Actions(), "update", "secrets") || hasAction(kube.Actions(), "patch", "mutatingwebhookconfigurations") {
		t.Errorf("second replica wrote: %v", kube.Actions())
	}
}

func TestServingCertRenewedBeforeExpiry(t *testing.T) {
	kube := fake.NewSimpleClientset(webhookConfig("multinet-webhook", "pods.multinet.io"))
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := newManager(kube, c)
	if err := m.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	first := served(t, m)
	c.add(day(5)) // 9-day certificate: more than a third left
	if err := m.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(served(t, m).Certificate[0], first.Certificate[0]) {
		t.Fatal("renewed with more than a third of its life left")
	}
	c.add(day(1.5)) // now under a third
	kube.ClearActions()
	if err := m.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	renewed := served(t, m)
	if bytes.Equal(renewed.Certificate[0], first.Certificate[0]) {
		t.Fatal("serving certificate not renewed with less than a third of its life left")
	}
	if hasAction(kube.Actions(), "patch", "mutatingwebhookconfigurations") {
		t.Error("caBundle patched though the CA did not change")
	}
	if err := verify(t, caBundle(t, kube)[0], renewed, c.t.Add(day(5))); err != nil {
		t.Errorf("renewed certificate: %v", err)
	}
}

func TestCARotation(t *testing.T) {
	kube := fake.NewSimpleClientset(webhookConfig("multinet-webhook", "pods.multinet.io"))
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := newManager(kube, c)
	m.CertValidity = day(30)
	other := newManager(kube, c) // a second replica
	other.CertValidity = day(30)
	sync := func(ms ...*CertManager) {
		t.Helper()
		for _, x := range ms {
			if err := x.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	sync(m, other)
	oldCert := served(t, m)

	// Under a third of the CA's life left: the next CA is trusted first, the serving
	// certificate stays.
	c.add(day(21))
	sync(m)
	bundle := caBundle(t, kube)[0]
	if n := len(parseBundle(bundle)); n != 2 {
		t.Fatalf("caBundle holds %d CAs during the overlap, want old+new", n)
	}
	oldCA := parseBundle(bundle)[0]
	if err := verify(t, encodeCert(oldCA.Raw), served(t, m), c.t); err != nil {
		t.Fatalf("serving certificate not from the old CA before the next CA was trusted for the overlap: %v", err)
	}
	oldCert = served(t, m) // renewed from the old CA: it too was near expiry

	// After the overlap the next CA signs the serving certificate; the old one (still served
	// by a replica that has not synced) keeps verifying, as the old CA stays in the bundle.
	c.add(11 * time.Minute)
	sync(m)
	newCert := served(t, m)
	bundle = caBundle(t, kube)[0]
	if bytes.Equal(newCert.Certificate[0], oldCert.Certificate[0]) {
		t.Fatal("serving certificate not reissued from the new CA")
	}
	if err := verify(t, bundle, newCert, c.t); err != nil {
		t.Fatalf("new certificate: %v", err)
	}
	if err := verify(t, bundle, served(t, other), c.t); err != nil {
		t.Fatalf("the other replica's old certificate no longer verifies: %v", err)
	}
	sync(other)
	if !bytes.Equal(served(t, other).Certificate[0], newCert.Certificate[0]) {
		t.Error("other replica did not load the new certificate")
	}
	sec, _ := kube.CoreV1().Secrets("multinet").Get(context.Background(), "multinet-webhook-tls", metav1.GetOptions{})
	if _, ok := sec.Data[SecretNextCACert]; ok || sec.Annotations[NextCASinceAnnot] != "" {
		t.Error("next CA left in the secret after promotion")
	}

	// Once the old CA has expired it leaves the bundle.
	c.add(day(10))
	sync(m)
	if n := len(parseBundle(caBundle(t, kube)[0])); n != 1 {
		t.Errorf("caBundle holds %d CAs after the old one expired, want 1", n)
	}
	if err := verify(t, caBundle(t, kube)[0], served(t, m), c.t); err != nil {
		t.Error(err)
	}
}

func TestSANChangeReissues(t *testing.T) {
	kube := fake.NewSimpleClientset(webhookConfig("multinet-webhook", "pods.multinet.io"))
	c := &clock{time.Now()}
	m := newManager(kube, c)
	if err := m.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	m.DNSNames, m.IPs = SANs("renamed", "multinet", []string{"127.0.0.2"})
	if err := m.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(served(t, m).Certificate[0])
	if leaf.DNSNames[0] != "renamed" || !leaf.IPAddresses[0].Equal(net.ParseIP("127.0.0.2")) {
		t.Errorf("SANs %v %v after --service-name/--extra-san changed", leaf.DNSNames, leaf.IPAddresses)
	}
}

// A live server picks up a renewed certificate on its next handshake, without a restart.
func TestGetCertificateReloads(t *testing.T) {
	kube := fake.NewSimpleClientset(webhookConfig("multinet-webhook", "pods.multinet.io"))
	c := &clock{time.Now()}
	m := newManager(kube, c)
	if err := m.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	url := serveTLS(t, http.NotFoundHandler(), m)
	peer := func() []byte {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(caBundle(t, kube)[0])
		cl := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}}
		resp, err := cl.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.TLS.PeerCertificates[0].Raw
	}
	before := peer()
	m.DNSNames = append(m.DNSNames, "extra.example")
	if err := m.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(peer(), before) {
		t.Error("server still presents the old certificate after the secret changed")
	}
}

func TestMissingWebhookConfigStillServes(t *testing.T) {
	// The Deployment may start before the configuration is applied: serve, report, retry.
	kube := fake.NewSimpleClientset()
	m := newManager(kube, &clock{time.Now()})
	if err := m.Sync(context.Background()); err == nil {
		t.Error("no error for a missing MutatingWebhookConfiguration")
	}
	if !m.Ready() {
		t.Error("no certificate served while the configuration is missing")
	}
}

// Short lifetimes (tests, or a cautious operator) renew on the same one-third rule: not at once
// because of the clock-skew allowance.
func TestShortValidityNotRenewedAtOnce(t *testing.T) {
	kube := fake.NewSimpleClientset(webhookConfig("multinet-webhook", "pods.multinet.io"))
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := newManager(kube, c)
	m.CAValidity, m.CertValidity = time.Minute, time.Minute
	if err := m.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	first := served(t, m)
	c.add(20 * time.Second)
	kube.ClearActions()
	if err := m.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if hasAction(kube.Actions(), "update", "secrets") || !bytes.Equal(served(t, m).Certificate[0], first.Certificate[0]) {
		t.Fatal("a one-minute CA and certificate renewed after 20s")
	}
	c.add(25 * time.Second)
	if err := m.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(parseBundle(caBundle(t, kube)[0])); n != 2 {
		t.Errorf("45s into a one-minute CA: caBundle holds %d CAs, want old+next", n)
	}
}

func TestNextCAWithoutStartTimeIsPromoted(t *testing.T) {
	kube := fake.NewSimpleClientset(webhookConfig("multinet-webhook", "pods.multinet.io"))
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := newManager(kube, c)
	if err := m.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.add(day(21)) // next CA enters the bundle
	if err := m.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	secrets := kube.CoreV1().Secrets("multinet")
	sec, _ := secrets.Get(context.Background(), "multinet-webhook-tls", metav1.GetOptions{})
	delete(sec.Annotations, NextCASinceAnnot) // someone edited the Secret
	if _, err := secrets.Update(context.Background(), sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	next := sec.Data[SecretNextCACert]
	for i := 0; i < 3; i++ {
		c.add(6 * time.Minute)
		if err := m.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	sec, _ = secrets.Get(context.Background(), "multinet-webhook-tls", metav1.GetOptions{})
	if !bytes.Equal(sec.Data[SecretCACert], next) {
		t.Error("next CA never promoted after its start time was lost")
	}
}
