package deviceplugin

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/multinet-io/multinet/nodeevents"
)

// NodeEvents returns an OnRefused hook that posts Events on the Node through rec: a Warning
// per refused pool, a Normal one when a later config has none. It never blocks the manager:
// the events go out from a goroutine, in the order the configs took effect. The standalone
// device plugin and the agent hosting one report alike.
func NodeEvents(log *slog.Logger, rec *nodeevents.Recorder) func([]Refusal) {
	var mu sync.Mutex // events in the order the configs took effect
	first := true
	var firstMu sync.Mutex
	return func(refused []Refusal) {
		firstMu.Lock()
		wasFirst := first
		first = false
		firstMu.Unlock()
		go func() {
			mu.Lock()
			defer mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for _, r := range refused {
				msg := fmt.Sprintf("resource %s is not served: %s", r.Resource, r)
				if err := rec.Warning(ctx, nodeevents.ReasonPoolRefused, msg); err != nil {
					log.Error("post node event", "err", err)
				}
			}
			if len(refused) == 0 && !wasFirst {
				if err := rec.Normal(ctx, nodeevents.ReasonPoolsServed, "every pool of the device plugin config is served"); err != nil {
					log.Error("post node event", "err", err)
				}
			}
		}()
	}
}
