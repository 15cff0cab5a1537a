package loadgen

import (
	"math"
	"math/bits"
	"slices"
	"sync/atomic"
	"time"
)

// Latencies are recorded in microseconds into a log-linear histogram rather than kept as raw
// samples: a 19k-socket tick run or a 60k req/s Fibonacci run would otherwise hold millions of
// samples, and histograms from several load-generator processes merge exactly by adding counts.
//
// Values below 2^subBits are exact; above, each power of two is split into 2^(subBits-1)
// buckets, so a reported percentile is within 1/64 (1.6 %) of the true one.
const (
	subBits    = 7
	subCount   = 1 << (subBits - 1) // buckets per power of two above the exact range
	maxExp     = 40                 // 2^40 µs ≈ 12.7 days: nothing real is slower
	histBucket = (maxExp + 2) * subCount
)

// Histogram counts durations. Record is lock-free, so every reader goroutine records into one
// shared histogram without contention worth measuring.
type Histogram struct {
	counts [histBucket]atomic.Uint64 // their sum is the number of values
	sum    atomic.Uint64             // µs
	max    atomic.Uint64             // µs
	neg    atomic.Uint64             // negative inputs, recorded as 0 (clock steps, bad tick times)
}

func bucketOf(us uint64) int {
	if us < 2*subCount {
		return int(us)
	}
	e := bits.Len64(us) - subBits // ≥ 1
	if e > maxExp {
		return histBucket - 1
	}
	return e*subCount + int(us>>uint(e))
}

// bucketLow is the smallest value that falls in bucket i.
func bucketLow(i int) uint64 {
	if i < 2*subCount {
		return uint64(i)
	}
	e := i/subCount - 1
	sub := uint64(i - e*subCount)
	return sub << uint(e)
}

// Record adds one duration.
func (h *Histogram) Record(d time.Duration) {
	us := d.Microseconds()
	if us < 0 {
		h.neg.Add(1)
		us = 0
	}
	u := uint64(us)
	h.counts[bucketOf(u)].Add(1)
	h.sum.Add(u)
	for {
		m := h.max.Load()
		if u <= m || h.max.CompareAndSwap(m, u) {
			break
		}
	}
}

// Snapshot copies the histogram into its mergeable, JSON-friendly form.
func (h *Histogram) Snapshot() HistSnapshot {
	s := HistSnapshot{SumUS: h.sum.Load(), MaxUS: h.max.Load(), Negative: h.neg.Load()}
	for i := range h.counts {
		if c := h.counts[i].Load(); c > 0 {
			s.Buckets = append(s.Buckets, [2]uint64{uint64(i), c})
			s.N += c
		}
	}
	return s
}

// HistSnapshot is a histogram as sparse [bucket, count] pairs: what child processes send to
// the parent of a -procs run.
type HistSnapshot struct {
	N        uint64      `json:"n"`
	SumUS    uint64      `json:"sum_us"`
	MaxUS    uint64      `json:"max_us"`
	Negative uint64      `json:"negative,omitempty"`
	Buckets  [][2]uint64 `json:"buckets,omitempty"`
}

// Merge adds o into s.
func (s *HistSnapshot) Merge(o HistSnapshot) {
	m := map[uint64]uint64{}
	for _, b := range s.Buckets {
		m[b[0]] += b[1]
	}
	for _, b := range o.Buckets {
		m[b[0]] += b[1]
	}
	s.Buckets = s.Buckets[:0]
	for k, v := range m {
		s.Buckets = append(s.Buckets, [2]uint64{k, v})
	}
	slices.SortFunc(s.Buckets, func(a, b [2]uint64) int { return int(a[0]) - int(b[0]) })
	s.N += o.N
	s.SumUS += o.SumUS
	s.MaxUS = max(s.MaxUS, o.MaxUS)
	s.Negative += o.Negative
}

// Quantile returns the value at quantile q (0 < q ≤ 1) by nearest rank, in µs: the lower
// bound of the bucket holding the ceil(q·N)-th smallest value, exact below 128 µs.
func (s HistSnapshot) Quantile(q float64) uint64 {
	if s.N == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(s.N)))
	rank = max(rank, 1)
	var seen uint64
	for _, b := range s.Buckets {
		seen += b[1]
		if seen >= rank {
			return min(bucketLow(int(b[0])), s.MaxUS)
		}
	}
	return s.MaxUS
}

// Summary reduces s to the figures reported.
func (s HistSnapshot) Summary() Latency {
	if s.N == 0 {
		return Latency{}
	}
	ms := func(us uint64) float64 { return float64(us) / 1000 }
	return Latency{
		Count: s.N,
		P50ms: ms(s.Quantile(0.50)), P90ms: ms(s.Quantile(0.90)), P99ms: ms(s.Quantile(0.99)),
		MaxMS: ms(s.MaxUS), MeanMS: float64(s.SumUS) / float64(s.N) / 1000,
		Negative: s.Negative,
	}
}

// Latency is a latency distribution in milliseconds.
type Latency struct {
	Count    uint64  `json:"count"`
	P50ms    float64 `json:"p50_ms"`
	P90ms    float64 `json:"p90_ms"`
	P99ms    float64 `json:"p99_ms"`
	MaxMS    float64 `json:"max_ms"`
	MeanMS   float64 `json:"mean_ms"`
	Negative uint64  `json:"negative,omitempty"` // samples below zero, counted as 0
}
