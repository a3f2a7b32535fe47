// Package benchmarks measures pod attach and detach latency of multinet side by side with
// upstream Multus on one simulated node: the same kernel, API server, VFs and delegates, the
// two stacks interleaved so machine noise hits both. `make bench` runs it.
package benchmarks

import (
	"math"
	"sort"
	"time"
)

// Summary is the distribution of one measured quantity, in milliseconds.
type Summary struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

// Summarize computes nearest-rank percentiles: the p-th percentile is the smallest sample with
// at least p% of the samples at or below it, so every reported value was really observed.
func Summarize(samples []time.Duration) Summary {
	if len(samples) == 0 {
		return Summary{}
	}
	s := append([]time.Duration(nil), samples...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return Summary{Count: len(s), P50: ms(percentile(s, 50)), P90: ms(percentile(s, 90)),
		P99: ms(percentile(s, 99)), Max: ms(s[len(s)-1])}
}

// percentile of sorted samples, nearest rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

// ms rounds to 0.01 ms: finer digits are noise at this scale.
func ms(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Millisecond)*100) / 100
}
