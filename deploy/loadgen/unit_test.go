package loadgen

import (
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/wsgw/wsgw/pkg/fib"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// percentile returns the p-th percentile (0 < p ≤ 100) of sorted by nearest rank: the
// smallest value with at least p % of the values at or below it. So for 1..100, p50 is 50 and
// p99 is 99. sorted must be in ascending order; an empty slice gives 0. It is the exact
// reference the histogram's quantiles are checked against.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

func TestPercentile(t *testing.T) {
	var v []float64
	for i := 1; i <= 100; i++ {
		v = append(v, float64(i))
	}
	for p, want := range map[float64]float64{50: 50, 90: 90, 99: 99, 100: 100, 1: 1, 0.1: 1} {
		if got := percentile(v, p); got != want {
			t.Errorf("p%v of 1..100 = %v, want %v", p, got, want)
		}
	}
	if percentile(nil, 50) != 0 {
		t.Error("empty input")
	}
}

func TestHistogram(t *testing.T) {
	var h Histogram
	for i := 1; i <= 100; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	s := h.Snapshot()
	for q, want := range map[float64]uint64{0.5: 50, 0.9: 90, 0.99: 99, 1: 100} {
		if got := s.Quantile(q); got != want {
			t.Errorf("q%v of 1..100 µs = %d, want %d", q, got, want)
		}
	}
	if l := s.Summary(); l.P50ms != 0.05 || l.MaxMS != 0.1 || l.Count != 100 {
		t.Errorf("summary %+v", l)
	}

	// Large values: within the 1/64 bucket resolution of the exact percentile.
	var big Histogram
	vals := make([]float64, 10000)
	for i := range vals {
		us := rand.Int64N(5_000_000)
		vals[i] = float64(us)
		big.Record(time.Duration(us) * time.Microsecond)
	}
	slices.Sort(vals)
	bs := big.Snapshot()
	for _, p := range []float64{50, 90, 99} {
		exact, got := percentile(vals, p), float64(bs.Quantile(p/100))
		if got > exact || got < exact*(1-1.0/64) {
			t.Errorf("p%v = %v, exact %v", p, got, exact)
		}
	}

	// Merging two halves gives the whole.
	var a, b Histogram
	for i := 1; i <= 100; i++ {
		if i%2 == 0 {
			a.Record(time.Duration(i) * time.Millisecond)
		} else {
			b.Record(time.Duration(i) * time.Millisecond)
		}
	}
	m := a.Snapshot()
	m.Merge(b.Snapshot())
	if m.N != 100 || m.MaxUS != 100_000 {
		t.Fatalf("merged n %d max %d", m.N, m.MaxUS)
	}
	if p := m.Quantile(0.5); p > 50_000 || p < 50_000*63/64 {
		t.Errorf("merged p50 = %d µs, want ≈ 50000", p)
	}
	var neg Histogram
	neg.Record(-time.Millisecond)
	if s := neg.Snapshot(); s.Negative != 1 || s.Quantile(0.5) != 0 {
		t.Errorf("negative sample: %+v", s)
	}
}

func TestBuckets(t *testing.T) {
	for _, v := range []uint64{0, 1, 127, 128, 129, 255, 256, 1000, 1 << 20, 123456789} {
		i := bucketOf(v)
		lo := bucketLow(i)
		if lo > v || bucketOf(lo) != i || (i+1 < histBucket && bucketLow(i+1) <= v) {
			t.Errorf("value %d: bucket %d starts at %d, next at %d", v, i, lo, bucketLow(i+1))
		}
	}
}

func TestReadProcSelf(t *testing.T) {
	deadline := time.Now().Add(200 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ { // burn a few clock ticks of CPU
		_ = x * x
	}
	s, err := ReadProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSS <= 0 || s.CPU <= 0 {
		t.Fatalf("own process: %+v, want RSS and CPU > 0", s)
	}
	cpu, rss := SelfUsage()
	if cpu <= 0 || rss <= 0 {
		t.Errorf("getrusage: cpu %v, max RSS %d", cpu, rss)
	}
	sm := NewSampler([]int{os.Getpid()}, 10*time.Millisecond)
	time.Sleep(30 * time.Millisecond)
	sm.Close()
	if sm.Peak(os.Getpid()) <= 0 || sm.Err() != nil {
		t.Errorf("sampler peak %d, err %v", sm.Peak(os.Getpid()), sm.Err())
	}
	if _, err := ReadProc(1 << 30); err == nil {
		t.Error("a pid that does not exist: no error")
	}
	if LoadAvg() == "" {
		t.Error("no load average")
	}
}

func TestParseStat(t *testing.T) {
	// A command name with spaces and a parenthesis; utime 150, stime 50 → 2 s.
	stat := []byte("42 (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 1 0 100 1000 10\n")
	cpu, err := parseStatCPU(stat)
	if err != nil || cpu != 2*time.Second {
		t.Errorf("cpu %v, %v; want 2s", cpu, err)
	}
	rss, err := parseVmRSS([]byte("Name:\tx\nVmRSS:\t   2048 kB\n"))
	if err != nil || rss != 2<<20 {
		t.Errorf("rss %d, %v", rss, err)
	}
}

func TestTickTimeFast(t *testing.T) {
	for _, iv := range []time.Duration{time.Second, 100 * time.Millisecond, 7 * time.Millisecond} {
		for _, at := range []time.Time{time.Now(), time.Date(2026, 2, 28, 23, 59, 59, 999e6, time.UTC), time.Date(2028, 12, 31, 0, 0, 0, 0, time.UTC)} {
			frame := protocol.TimeFrame(protocol.TickSeq(at, iv), iv)
			got, ok := tickTimeFast(frame)
			f, _ := protocol.Decode(frame)
			want, err := protocol.ParseTickTime(f.Time)
			if !ok || err != nil || !got.Equal(want) {
				t.Errorf("%s: fast %v (%v), want %v (%v)", frame, got, ok, want, err)
			}
		}
	}
	for _, bad := range []string{`{"type":"time","seq":1,"time":"2026-01-01 00:00:00.000Z"}`, `{}`, `{"type":"time","seq":1,"time":"2026-13-01T00:00:00.000Z"}`} {
		if _, ok := tickTimeFast([]byte(bad)); ok {
			t.Errorf("%s parsed", bad)
		}
	}
}

func TestFibDecimal(t *testing.T) {
	known := map[int]string{0: "0", 1: "1", 2: "1", 3: "2", 10: "55", 90: "2880067194370816120", 100: "354224848179261915075"}
	for n, want := range known {
		if got := fibDecimal(n); got != want {
			t.Errorf("F(%d) = %s, want %s", n, got, want)
		}
	}
	for _, n := range []int{93, 94, 1000, 4097, 10000} {
		if got, want := fibDecimal(n), fib.Decimal(n); got != want {
			t.Errorf("F(%d) disagrees with pkg/fib", n)
		}
	}
}
