package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// Keys of the webhook's Secret. It holds the CA (so every replica and every restart serves
// certificates the API server already trusts), the serving certificate, and the bundle of CAs the
// API server must trust (the current one, a next one during a rotation, older ones until they
// expire).
const (
	SecretCACert     = "ca.crt"
	SecretCAKey      = "ca.key"
	SecretCert       = "tls.crt"
	SecretKey        = "tls.key"
	SecretBundle     = "ca-bundle.crt"
	SecretNextCACert = "next-ca.crt"
	SecretNextCAKey  = "next-ca.key"
	// NextCASinceAnnot is when the next CA entered the bundle; it signs the serving certificate
	// only Overlap later, once every API server has had time to see it in caBundle.
	NextCASinceAnnot = "multinet.io/next-ca-since"
)

// CertManager keeps the webhook's CA and serving certificate in a Secret, renews them before
// they expire, keeps the MutatingWebhookConfiguration's caBundle in step, and serves the current
// certificate through GetCertificate.
type CertManager struct {
	Kube          kubernetes.Interface
	Namespace     string
	SecretName    string
	WebhookConfig string // MutatingWebhookConfiguration whose caBundle is ours ("" for none)
	DNSNames      []string
	IPs           []net.IP
	CAValidity    time.Duration
	CertValidity  time.Duration
	// Overlap is how long a new CA is trusted (in caBundle) before it signs the serving
	// certificate. It must exceed the sync interval so every replica patches and reloads.
	Overlap time.Duration
	Now     func() time.Time
	Log     *slog.Logger

	cert atomic.Pointer[tls.Certificate]
}

// GetCertificate is for tls.Config: it serves the certificate of the last Sync, so a renewal
// takes effect without a restart.
func (m *CertManager) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := m.cert.Load()
	if c == nil {
		return nil, errors.New("multinet webhook: no serving certificate yet")
	}
	return c, nil
}

// Ready reports whether a serving certificate is loaded.
func (m *CertManager) Ready() bool { return m.cert.Load() != nil }

func (m *CertManager) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

func (m *CertManager) log() *slog.Logger {
	if m.Log != nil {
		return m.Log
	}
	return slog.Default()
}

// Run syncs every interval until ctx ends; errors are logged and retried.
func (m *CertManager) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := m.Sync(ctx); err != nil {
				m.log().Error("certificate sync", "err", err)
			}
		}
	}
}

// Sync makes one pass: create or renew what the Secret holds, patch caBundle, load the serving
// certificate. Replicas race only on the Secret's resourceVersion; the loser re-reads.
func (m *CertManager) Sync(ctx context.Context) error {
	var sec *corev1.Secret
	var err error
	for attempt := 0; ; attempt++ {
		sec, err = m.syncSecret(ctx)
		if err == nil || attempt == 3 || !(apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("secret %s/%s: %w", m.Namespace, m.SecretName, err)
	}
	c, err := tls.X509KeyPair(sec.Data[SecretCert], sec.Data[SecretKey])
	if err != nil {
		return fmt.Errorf("secret %s/%s: serving certificate: %w", m.Namespace, m.SecretName, err)
	}
	// The bundle is in the webhook configuration before a certificate it signs is served here.
	if err := m.patchCABundle(ctx, sec.Data[SecretBundle]); err != nil {
		if m.cert.Load() == nil {
			m.cert.Store(&c) // serve anyway: the configuration may be applied after us
		}
		return err
	}
	if old := m.cert.Load(); old == nil || !bytes.Equal(old.Certificate[0], c.Certificate[0]) {
		m.log().Info("serving certificate loaded", "secret", m.Namespace+"/"+m.SecretName, "notAfter", notAfter(sec.Data[SecretCert]))
	}
	m.cert.Store(&c)
	return nil
}

func notAfter(p []byte) string {
	if c, err := parseCert(p); err == nil {
		return c.NotAfter.UTC().Format(time.RFC3339)
	}
	return "?"
}

func (m *CertManager) syncSecret(ctx context.Context) (*corev1.Secret, error) {
	secrets := m.Kube.CoreV1().Secrets(m.Namespace)
	sec, err := secrets.Get(ctx, m.SecretName, metav1.GetOptions{})
	create := apierrors.IsNotFound(err)
	if err != nil && !create {
		return nil, err
	}
	if create {
		sec = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: m.SecretName, Namespace: m.Namespace}, Type: corev1.SecretTypeOpaque}
	}
	data := map[string][]byte{}
	for k, v := range sec.Data {
		data[k] = v
	}
	annots := map[string]string{}
	for k, v := range sec.Annotations {
		annots[k] = v
	}
	changed, err := m.renew(data, annots)
	if err != nil || !changed {
		return sec, err
	}
	sec = sec.DeepCopy()
	sec.Data, sec.Annotations = data, annots
	if create {
		m.log().Info("creating webhook CA and serving certificate", "secret", m.Namespace+"/"+m.SecretName)
		return secrets.Create(ctx, sec, metav1.CreateOptions{})
	}
	return secrets.Update(ctx, sec, metav1.UpdateOptions{})
}

// renew brings the Secret's data up to date and reports whether anything changed.
func (m *CertManager) renew(data map[string][]byte, annots map[string]string) (bool, error) {
	now := m.now()
	changed := false
	ca, caErr := parseCert(data[SecretCACert])
	if _, err := parseKey(data[SecretCAKey]); caErr != nil || err != nil || !now.Before(ca.NotAfter) {
		// No usable CA: start over. The old bundle is dropped too: nothing it signed is valid.
		crt, key, err := newCA(now, m.CAValidity)
		if err != nil {
			return false, err
		}
		m.log().Info("new webhook CA", "reason", "none usable in the secret")
		clear(data)
		delete(annots, NextCASinceAnnot)
		data[SecretCACert], data[SecretCAKey] = crt, key
		ca, _ = parseCert(crt)
		changed = true
	}

	// Rotation, phase 2: the next CA has been trusted for Overlap; it becomes the CA. A next CA
	// whose start time was lost (an edited Secret) starts its overlap again rather than never.
	since, err := time.Parse(time.RFC3339, annots[NextCASinceAnnot])
	if data[SecretNextCACert] != nil && err != nil {
		annots[NextCASinceAnnot] = now.UTC().Format(time.RFC3339)
		changed = true
	}
	if err == nil && data[SecretNextCACert] != nil && now.Sub(since) >= m.Overlap {
		if next, err := parseCert(data[SecretNextCACert]); err == nil {
			data[SecretCACert], data[SecretCAKey] = data[SecretNextCACert], data[SecretNextCAKey]
			ca = next
			m.log().Info("webhook CA rotated", "notAfter", next.NotAfter.UTC().Format(time.RFC3339))
		}
		delete(data, SecretNextCACert)
		delete(data, SecretNextCAKey)
		delete(annots, NextCASinceAnnot)
		changed = true
	}
	// Rotation, phase 1: less than a third of the CA's life left: a next CA enters the bundle.
	if data[SecretNextCACert] == nil && nearExpiry(ca, now) {
		crt, key, err := newCA(now, m.CAValidity)
		if err != nil {
			return false, err
		}
		data[SecretNextCACert], data[SecretNextCAKey] = crt, key
		annots[NextCASinceAnnot] = now.UTC().Format(time.RFC3339)
		m.log().Info("webhook CA near expiry: next CA added to the bundle", "caNotAfter", ca.NotAfter.UTC().Format(time.RFC3339))
		changed = true
	}

	if !servingOK(data[SecretCert], ca, m.DNSNames, m.IPs, now) {
		crt, key, err := issueServing(data[SecretCACert], data[SecretCAKey], m.DNSNames, m.IPs, now, m.CertValidity)
		if err != nil {
			return false, err
		}
		data[SecretCert], data[SecretKey] = crt, key
		changed = true
	}

	// The bundle: every CA still valid that we have held, current and next first.
	want := []*x509.Certificate{ca}
	if next, err := parseCert(data[SecretNextCACert]); err == nil {
		want = append(want, next)
	}
	for _, c := range parseBundle(data[SecretBundle]) {
		if now.Before(c.NotAfter) && !containsCert(want, c) {
			want = append(want, c)
		}
	}
	if b := encodeBundle(want); !bytes.Equal(b, data[SecretBundle]) {
		data[SecretBundle] = b
		changed = true
	}
	return changed, nil
}

func containsCert(list []*x509.Certificate, c *x509.Certificate) bool {
	for _, x := range list {
		if x.Equal(c) {
			return true
		}
	}
	return false
}

// patchCABundle sets caBundle on every webhook of the configuration that does not have it yet.
// Each operation tests the webhook's name first, so a concurrent edit that reorders the list
// fails the patch instead of patching someone else's webhook.
func (m *CertManager) patchCABundle(ctx context.Context, bundle []byte) error {
	if m.WebhookConfig == "" {
		return nil
	}
	mwcs := m.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations()
	cfg, err := mwcs.Get(ctx, m.WebhookConfig, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("MutatingWebhookConfiguration %s: %w", m.WebhookConfig, err)
	}
	var ops []PatchOp
	for i, w := range cfg.Webhooks {
		if bytes.Equal(w.ClientConfig.CABundle, bundle) {
			continue
		}
		p := fmt.Sprintf("/webhooks/%d", i)
		ops = append(ops, PatchOp{Op: "test", Path: p + "/name", Value: w.Name},
			PatchOp{Op: "add", Path: p + "/clientConfig/caBundle", Value: bundle})
	}
	if len(ops) == 0 {
		return nil
	}
	b, err := json.Marshal(ops)
	if err != nil {
		return err
	}
	if _, err := mwcs.Patch(ctx, m.WebhookConfig, types.JSONPatchType, b, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("MutatingWebhookConfiguration %s: patch caBundle: %w", m.WebhookConfig, err)
	}
	m.log().Info("caBundle patched", "webhookConfiguration", m.WebhookConfig, "cas", len(parseBundle(bundle)))
	return nil
}

// SANs splits --extra-san values into DNS names and IP addresses.
func SANs(serviceName, namespace string, extra []string) ([]string, []net.IP) {
	var dns []string
	var ips []net.IP
	if serviceName != "" {
		// What the API server dials for a service reference: <svc>.<ns>.svc.
		dns = append(dns, serviceName, serviceName+"."+namespace, serviceName+"."+namespace+".svc")
	}
	for _, s := range extra {
		if ip := net.ParseIP(s); ip != nil {
			ips = append(ips, ip)
		} else if s != "" {
			dns = append(dns, s)
		}
	}
	return dns, ips
}
