package webhook

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"
)

// Run as the binary runs it: the first sync creates the Secret and patches caBundle, the NAD
// informer syncs, then /readyz and /mutate answer over TLS with the managed certificate; the
// server stops with its context.
func TestRunServes(t *testing.T) {
	kube := fake.NewSimpleClientset(webhookConfig("multinet-webhook", "pods.multinet.io"))
	dns, ips := SANs("multinet-webhook", "multinet", []string{"127.0.0.1"})
	certs := &CertManager{Kube: kube, Namespace: "multinet", SecretName: "multinet-webhook-tls", WebhookConfig: "multinet-webhook",
		DNSNames: dns, IPs: ips, CAValidity: 24 * time.Hour, CertValidity: time.Hour, Overlap: time.Minute}
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Listen: "127.0.0.1:0", Kube: kube, NADs: nadClient(t), Certs: certs, SyncInterval: time.Second,
			Mutator: Mutator{DownwardAPI: true}, Ready: func(a net.Addr) { addrc <- a }})
	}()
	var addr net.Addr
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Run never served")
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caBundle(t, kube)[0])
	s := &server{url: "https://" + addr.String() + MutatePath, client: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}}
	resp, err := s.client.Get("https://" + addr.String() + "/readyz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz: %v %v", resp, err)
	}
	resp.Body.Close()
	wantResources(t, s.admit(t, testPod("sriov-a,other/sriov-b")), map[string]int64{resA: 1, resB: 1})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("Run did not stop with its context")
	}
}
