package agent

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the agent's; a registry of its own so two agents in one test do not collide.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	delegate *prometheus.HistogramVec
	inFlight prometheus.Gauge
	queued   prometheus.Gauge
}

// Buckets from 1 ms (a cached DEL) to 60 s (a VF whose driver is slow to settle).
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "multinet_cni_requests_total",
			Help: "CNI requests served, by command and result (ok or error)."}, []string{"command", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "multinet_cni_request_duration_seconds",
			Help: "Time from receiving a CNI request to answering it (queueing included), by command.", Buckets: latencyBuckets}, []string{"command"}),
		delegate: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "multinet_cni_delegate_duration_seconds",
			Help: "Time one delegate plugin took, by plugin type, command and whether it ran in-process.", Buckets: latencyBuckets}, []string{"plugin", "command", "inprocess"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "multinet_cni_requests_in_flight", Help: "CNI requests being served."}),
		queued:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "multinet_cni_requests_queued", Help: "CNI requests waiting for their container's turn or a free worker."}),
	}
	m.reg.MustRegister(m.requests, m.duration, m.delegate, m.inFlight, m.queued,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
