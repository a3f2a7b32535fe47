package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"time"

	"github.com/multinet-io/multinet/deviceplugin"
	"github.com/multinet-io/multinet/nodeevents"
	"github.com/multinet-io/multinet/vfmanager"
)

// vfPolicy applies the VF node policy (the `multinetctl vf apply` file) and re-applies it when
// the file's content changes. A policy that fails (a driver not loaded yet, a PF not there yet)
// is retried on every look until it passes; one that does not parse is logged once per change.
type vfPolicy struct {
	a     *Agent
	file  string
	tried [sha256.Size]byte
	done  bool // the content in tried was applied (or cannot be: it does not parse)
}

func (v *vfPolicy) look() {
	b, err := os.ReadFile(v.file)
	if err != nil {
		v.a.log.Error("VF policy: read", "file", v.file, "err", err)
		return
	}
	sum := sha256.Sum256(b)
	if v.done && bytes.Equal(sum[:], v.tried[:]) {
		return
	}
	v.tried, v.done = sum, false
	p, err := vfmanager.ParsePolicy(b)
	if err != nil {
		v.a.log.Error("VF policy: not applied", "file", v.file, "err", err)
		v.done = true
		return
	}
	start := time.Now()
	changes, err := vfmanager.New(v.a.sys).Apply(p, vfmanager.ApplyOptions{})
	for _, c := range changes {
		v.a.log.Info("VF policy: changed", "file", v.file, "change", c.String())
	}
	if err != nil {
		v.a.log.Error("VF policy: apply failed, retrying", "file", v.file, "changes", len(changes), "err", err)
		return
	}
	v.done = true
	v.a.log.Info("VF policy: applied", "file", v.file, "changes", len(changes), "ms", time.Since(start).Milliseconds())
}

// runNode starts what the agent hosts besides the CNI server: the VF policy first (the device
// plugin then finds the VFs it creates) and the device plugin. It returns once both are running;
// they stop with ctx, and wait returns when they did.
func (a *Agent) runNode(ctx context.Context) (wait func(), err error) {
	var stopped []chan struct{}
	if a.cfg.VFPolicyFile != "" {
		v := &vfPolicy{a: a, file: a.cfg.VFPolicyFile}
		v.look()
		done := make(chan struct{})
		stopped = append(stopped, done)
		go func() {
			defer close(done)
			t := time.NewTicker(a.cfg.VFPolicyInterval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					v.look()
				}
			}
		}()
	}
	if a.cfg.DevicePlugin != nil {
		opts := *a.cfg.DevicePlugin
		if opts.Logger == nil {
			opts.Logger = a.log.With("part", "deviceplugin")
		}
		if opts.OnRefused == nil && a.cfg.Kube != nil {
			// Refused pools as Events on the Node, as the standalone device plugin posts them.
			opts.OnRefused = deviceplugin.NodeEvents(opts.Logger, &nodeevents.Recorder{Kube: a.cfg.Kube, Node: a.cfg.NodeName, Component: "multinetd"})
		}
		m, err := deviceplugin.New(opts)
		if err != nil {
			return nil, err
		}
		done := make(chan struct{})
		stopped = append(stopped, done)
		go func() {
			defer close(done)
			// The device plugin failing takes neither the CNI server nor pods' DEL down.
			if err := m.Run(ctx); err != nil && ctx.Err() == nil {
				a.log.Error("device plugin stopped", "err", err)
			}
		}()
	}
	return func() {
		for _, d := range stopped {
			<-d
		}
	}, nil
}
