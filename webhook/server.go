package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	nadclient "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/clientset/versioned"
	"k8s.io/client-go/kubernetes"
)

// Config is what the multinet-webhook binary runs.
type Config struct {
	Listen       string
	Kube         kubernetes.Interface
	NADs         nadclient.Interface
	Mutator      Mutator // NADs is filled in by Run
	Certs        *CertManager
	SyncInterval time.Duration
	Log          *slog.Logger
	// Ready, if set, is called with the bound address once the server accepts connections.
	Ready func(addr net.Addr)
}

// Run serves the webhook until ctx ends: it loads (or creates) the certificates, starts the NAD
// informer, then serves /mutate and /healthz, /readyz over TLS.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	// A first sync that fails (API server not reachable yet, configuration not applied yet) is
	// retried by the loop; the server starts once a certificate exists.
	for {
		err := cfg.Certs.Sync(ctx)
		if err == nil {
			break
		}
		log.Error("certificate sync", "err", err)
		if cfg.Certs.Ready() {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	go cfg.Certs.Run(ctx, cfg.SyncInterval)

	nads, err := StartNADCache(ctx, cfg.NADs)
	if err != nil {
		return err
	}
	m := cfg.Mutator
	m.NADs = nads

	mux := http.NewServeMux()
	mux.Handle(MutatePath, &Handler{Mutator: &m, Log: log})
	ok := func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) }
	mux.HandleFunc("/healthz", ok)
	mux.HandleFunc("/readyz", ok) // reached only once the cert and the NAD cache are there

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: cfg.Certs.GetCertificate},
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("serving", "addr", ln.Addr().String(), "path", MutatePath)
	if cfg.Ready != nil {
		cfg.Ready(ln.Addr())
	}
	if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
