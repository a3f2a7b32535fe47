package benchmarks

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ScaleResult is the -scale step: pods on other nodes and NADs put into the API server while
// the thick daemons run, and each daemon's RSS before and after (after a few eth0 pods on
// this node, so the caches served real requests).
type ScaleResult struct {
	Pods          int                 `json:"pods"`
	NADs          int                 `json:"nads"`
	CreateSeconds float64             `json:"create_seconds"`
	Daemons       map[string]ScaleMem `json:"daemons"`
	// PodsAfter: eth0 ADD+DEL cycles per thick stack after the objects were in; failures.
	PodsAfter    int `json:"pods_after"`
	FailedAfter  int `json:"failed_after"`
	SettleSecond int `json:"settle_seconds"`
}

type ScaleMem struct {
	BeforeKB int64 `json:"before_kb"`
	AfterKB  int64 `json:"after_kb"`
}

const (
	scalePods       = 5000
	scaleNADs       = 2000
	scaleNamespaces = 20
	scaleSettle     = 15 * time.Second
	scaleCycles     = 4
)

func (b *Bench) daemons() []*daemon {
	var out []*daemon
	seen := map[*daemon]bool{}
	for _, s := range b.stacks {
		for _, w := range []bool{false, true} {
			if d := s.daemon[w]; d != nil && !seen[d] {
				seen[d] = true
				out = append(out, d)
			}
		}
	}
	return out
}

func (b *Bench) scale(rep *Report) error {
	ctx := context.Background()
	res := &ScaleResult{Pods: scalePods, NADs: scaleNADs, Daemons: map[string]ScaleMem{}, SettleSecond: int(scaleSettle / time.Second)}
	for _, d := range b.daemons() {
		rss, _ := d.mem()
		res.Daemons[d.name] = ScaleMem{BeforeKB: rss}
	}
	b.o.Log.Info("scale: creating objects", "pods", scalePods, "nads", scaleNADs)
	start := time.Now()
	for i := 0; i < scaleNamespaces; i++ {
		ns := fmt.Sprintf("scale-%d", i)
		if _, err := b.api.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return err
		}
		if _, err := b.api.Kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	work := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				var err error
				ns := fmt.Sprintf("scale-%d", i%scaleNamespaces)
				if i < scaleNADs {
					conf := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "scale-%d", "type": "macvlan", "master": "eth0", "ipam": {"type": "host-local", "subnet": "10.%d.%d.0/24"}}`, i, 100+i/256, i%256)
					_, err = b.api.NADs.K8sCniCncfIoV1().NetworkAttachmentDefinitions(ns).Create(ctx, &nadv1.NetworkAttachmentDefinition{
						ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("nad-%d", i)}, Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: conf}}, metav1.CreateOptions{})
				} else {
					j := i - scaleNADs
					noToken := false
					_, err = b.api.Kube.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
						ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pod-%d", j), Labels: map[string]string{"app": fmt.Sprintf("app-%d", j%50)},
							Annotations: map[string]string{nadv1.NetworkAttachmentAnnot: fmt.Sprintf("nad-%d", (j*scaleNamespaces+i%scaleNamespaces)%scaleNADs)}},
						Spec: corev1.PodSpec{NodeName: fmt.Sprintf("other-%d", j%100), AutomountServiceAccountToken: &noToken,
							Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}}}, metav1.CreateOptions{})
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < scaleNADs+scalePods; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	res.CreateSeconds = time.Since(start).Seconds()
	b.o.Log.Info("scale: objects created", "seconds", res.CreateSeconds)
	time.Sleep(scaleSettle) // the watches deliver the NADs (the pods elsewhere: never, node-filtered)
	for _, st := range b.stacks {
		if !st.thick() {
			continue
		}
		for i := 0; i < scaleCycles; i++ {
			for _, s := range b.round(st.Name, Scenario{Name: "eth0"}, false, fmt.Sprintf("scale%d", i)) {
				res.PodsAfter++
				if s.addErr != nil || s.delErr != nil || s.vErr != nil {
					res.FailedAfter++
				}
			}
		}
	}
	for _, d := range b.daemons() {
		m := res.Daemons[d.name]
		m.AfterKB, _ = d.mem()
		res.Daemons[d.name] = m
	}
	rep.Scale = res
	return nil
}

func (s *ScaleResult) table(w io.Writer) {
	fmt.Fprintf(w, "scale: %d pods on other nodes + %d NADs created in %.0f s, %d s to settle, then %d eth0 pods on this node (%d failed); RSS (MiB) before -> after:\n",
		s.Pods, s.NADs, s.CreateSeconds, s.SettleSecond, s.PodsAfter, s.FailedAfter)
	for _, k := range sortedKeys(s.Daemons) {
		m := s.Daemons[k]
		fmt.Fprintf(w, "  %-22s %6.1f -> %6.1f  (%+.1f)\n", k, mib(m.BeforeKB), mib(m.AfterKB), mib(m.AfterKB-m.BeforeKB))
	}
}
