// Command multinet-webhook is the mutating admission webhook that adds the device-plugin
// resources of a pod's networks to its first container (network-resources-injector compatible).
// It is a thin shell over package webhook: flags, client setup and SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	nadclient "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/clientset/versioned"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/multinet-io/multinet/meta"
	"github.com/multinet-io/multinet/webhook"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("multinet-webhook", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", ":8443", "address to serve HTTPS on")
	namespace := fs.String("namespace", os.Getenv("POD_NAMESPACE"), "namespace of the TLS Secret and the Service (default $POD_NAMESPACE)")
	secretName := fs.String("secret-name", "multinet-webhook-tls", "Secret holding the webhook's CA and serving certificate")
	webhookConfig := fs.String("webhook-config-name", "multinet-webhook", "MutatingWebhookConfiguration whose caBundle this webhook keeps (\"\" for none)")
	serviceName := fs.String("service-name", "multinet-webhook", "Service the API server reaches the webhook by (the certificate's DNS names)")
	var extraSANs listFlag
	fs.Var(&extraSANs, "extra-san", "more DNS names or IP addresses for the certificate (repeatable or comma-separated; e.g. 127.0.0.1 for clientConfig.url)")
	downward := fs.Bool("inject-downward-api", true, "mount the pod's annotations and labels at /etc/podnetinfo when resources are injected")
	keys := listFlag{}
	fs.Var(&keys, "network-resource-name-keys", "NAD annotations naming the resource (upstream's flag; default "+meta.ResourceNameAnnot+")")
	honor := fs.Bool("honor-resources", false, "add to the resources the pod already requests instead of leaving them as set (upstream's flag)")
	hugepages := fs.Bool("injectHugepageDownApi", false, "also publish hugepages requests and limits in /etc/podnetinfo (upstream's flag)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig (default: in-cluster)")
	caValidity := fs.Duration("ca-validity", 2*365*24*time.Hour, "lifetime of a generated CA")
	certValidity := fs.Duration("cert-validity", 90*24*time.Hour, "lifetime of a serving certificate")
	sync := fs.Duration("sync-interval", time.Minute, "how often the Secret, renewal and caBundle are checked")
	overlap := fs.Duration("ca-overlap", 10*time.Minute, "how long a new CA is in caBundle before it signs the serving certificate (> --sync-interval)")
	verbose := fs.Bool("v", false, "debug logging")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	fail := func(err error) int {
		fmt.Fprintf(stderr, "multinet-webhook: %v\n", err)
		return 1
	}
	if *namespace == "" {
		return fail(fmt.Errorf("no --namespace and no POD_NAMESPACE"))
	}
	if *overlap <= *sync {
		return fail(fmt.Errorf("--ca-overlap %s must be longer than --sync-interval %s", *overlap, *sync))
	}
	var rc *rest.Config
	var err error
	if *kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", *kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return fail(err)
	}
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fail(err)
	}
	nads, err := nadclient.NewForConfig(rc)
	if err != nil {
		return fail(err)
	}
	dns, ips := webhook.SANs(*serviceName, *namespace, extraSANs)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err = webhook.Run(ctx, webhook.Config{
		Listen: *listen, Kube: kube, NADs: nads, Log: log, SyncInterval: *sync,
		Mutator: webhook.Mutator{ResourceNameKeys: keys, HonorResources: *honor, DownwardAPI: *downward, HugepagesDownwardAPI: *hugepages},
		Certs: &webhook.CertManager{Kube: kube, Namespace: *namespace, SecretName: *secretName, WebhookConfig: *webhookConfig,
			DNSNames: dns, IPs: ips, CAValidity: *caValidity, CertValidity: *certValidity, Overlap: *overlap, Log: log},
	})
	if err != nil && ctx.Err() == nil {
		return fail(err)
	}
	return 0
}
