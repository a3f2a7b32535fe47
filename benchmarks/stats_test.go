package benchmarks

import (
	"testing"
	"time"
)

func TestSummarizeNearestRank(t *testing.T) {
	var s []time.Duration
	// 1..100 ms, shuffled order: percentiles must not depend on input order.
	for i := 100; i >= 1; i-- {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	got := Summarize(s)
	want := Summary{Count: 100, P50: 50, P90: 90, P99: 99, Max: 100}
	if got != want {
		t.Fatalf("Summarize(1..100ms) = %+v, want %+v", got, want)
	}
	if s[0] != 100*time.Millisecond {
		t.Fatal("Summarize reordered the caller's samples")
	}
}

func TestSummarizeSmallSets(t *testing.T) {
	if got := Summarize(nil); got != (Summary{}) {
		t.Fatalf("empty: %+v", got)
	}
	one := Summarize([]time.Duration{1500 * time.Microsecond})
	if one.P50 != 1.5 || one.P99 != 1.5 || one.Max != 1.5 || one.Count != 1 {
		t.Fatalf("one sample: %+v", one)
	}
	// 3 samples: p50 is the 2nd, p90 and p99 the 3rd (nearest rank, never interpolated).
	three := Summarize([]time.Duration{3 * time.Millisecond, 1 * time.Millisecond, 2 * time.Millisecond})
	if three.P50 != 2 || three.P90 != 3 || three.P99 != 3 {
		t.Fatalf("three samples: %+v", three)
	}
}
