package webhook

import (
	"context"
	"fmt"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	nadclient "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/clientset/versioned"
	nadinformers "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/informers/externalversions"
	nadlisters "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/listers/k8s.cni.cncf.io/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

// NADCache answers from an informer's lister. A NAD the lister does not have yet is read from
// the API server before the pod is denied: "create the NAD, then the pod" in one kubectl apply
// must not race the watch.
type NADCache struct {
	Lister nadlisters.NetworkAttachmentDefinitionLister
	// Client, if set, is asked when the lister has no such NAD.
	Client  nadclient.Interface
	Timeout time.Duration
}

// Get implements NADGetter.
func (c *NADCache) Get(namespace, name string) (*nadv1.NetworkAttachmentDefinition, error) {
	nad, err := c.Lister.NetworkAttachmentDefinitions(namespace).Get(name)
	if err == nil || !IsNotFound(err) || c.Client == nil {
		return nad, err
	}
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.Client.K8sCniCncfIoV1().NetworkAttachmentDefinitions(namespace).Get(ctx, name, metav1.GetOptions{})
}

// StartNADCache starts a NAD informer over all namespaces and waits for its first list.
func StartNADCache(ctx context.Context, client nadclient.Interface) (*NADCache, error) {
	f := nadinformers.NewSharedInformerFactory(client, 0)
	inf := f.K8sCniCncfIo().V1().NetworkAttachmentDefinitions()
	lister, informer := inf.Lister(), inf.Informer() // both before Start, or nothing is started
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		return nil, fmt.Errorf("NetworkAttachmentDefinition informer: not synced: %w", context.Cause(ctx))
	}
	return &NADCache{Lister: lister, Client: client}, nil
}
