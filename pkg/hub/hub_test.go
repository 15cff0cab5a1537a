package hub

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/wsgw/wsgw/pkg/metrics"
	"github.com/wsgw/wsgw/pkg/protocol"
)

type countSink struct {
	n    atomic.Int64
	last atomic.Pointer[[]byte]
}

func (s *countSink) Send(b []byte) { s.n.Add(1); s.last.Store(&b) }

func TestBroadcastReachesEverySinkOnce(t *testing.T) {
	h := New(nil)
	sinks := make([]*countSink, 1000)
	removes := make([]func(), len(sinks))
	for i := range sinks {
		sinks[i] = &countSink{}
		removes[i] = h.Add(sinks[i])
	}
	if h.Len() != 1000 {
		t.Fatalf("Len = %d", h.Len())
	}
	frame := protocol.TimeFrame(10, time.Second)
	if !h.Broadcast(frame) {
		t.Fatal("first broadcast dropped")
	}
	for i, s := range sinks {
		if s.n.Load() != 1 || &(*s.last.Load())[0] != &frame[0] {
			t.Fatalf("sink %d got %d frames (or a copy)", i, s.n.Load())
		}
	}
	// Remove half (twice each: idempotent), broadcast again.
	for i := 0; i < 1000; i += 2 {
		removes[i]()
		removes[i]()
	}
	if h.Len() != 500 {
		t.Fatalf("Len after removes = %d", h.Len())
	}
	h.Broadcast(protocol.TimeFrame(11, time.Second))
	for i, s := range sinks {
		want := int64(2)
		if i%2 == 0 {
			want = 1
		}
		if s.n.Load() != want {
			t.Fatalf("sink %d got %d frames, want %d", i, s.n.Load(), want)
		}
	}
}

func TestBroadcastDropsDuplicatesAndOldSeqs(t *testing.T) {
	h := New(nil)
	s := &countSink{}
	h.Add(s)
	for _, seq := range []int64{5, 5, 4, 6, 6, 3, 7} {
		h.Broadcast(protocol.TimeFrame(seq, time.Second))
	}
	if s.n.Load() != 3 { // 5, 6, 7
		t.Fatalf("delivered %d, want 3", s.n.Load())
	}
	if h.Broadcast([]byte(`{"type":"fib"}`)) || h.Broadcast([]byte(`junk`)) {
		t.Fatal("non-time frame broadcast")
	}
}

// TestConcurrentBroadcastsNeverDuplicate: two tickers publishing the same seqs at once (a
// failover) deliver each seq once.
func TestConcurrentBroadcastsNeverDuplicate(t *testing.T) {
	h := New(nil)
	s := &countSink{}
	h.Add(s)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for seq := int64(1); seq <= 500; seq++ {
				h.Broadcast(protocol.TimeFrame(seq, time.Second))
			}
		})
	}
	wg.Wait()
	if got := s.n.Load(); got > 500 || got < 1 {
		t.Fatalf("delivered %d for 500 distinct seqs", got)
	}
}

func TestConcurrentAddRemove(t *testing.T) {
	h := New(nil)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				rm := h.Add(&countSink{})
				if i%3 != 0 {
					rm()
				}
				if i%50 == 0 {
					h.Broadcast(protocol.TimeFrame(int64(g*1000+i), time.Second))
				}
			}
		})
	}
	wg.Wait()
	if want := 8 * 167; h.Len() != want {
		t.Fatalf("Len = %d, want %d", h.Len(), want)
	}
}

type nopSink struct{}

func (nopSink) Send([]byte) {}

// BenchmarkBroadcast: the hub's own cost per tick for N sinks (no sockets).
func BenchmarkBroadcast(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("sinks=%d", n), func(b *testing.B) {
			h := New(nil)
			for range n {
				h.Add(&nopSink{})
			}
			frames := make([][]byte, b.N)
			for i := range frames {
				frames[i] = protocol.TimeFrame(int64(i+1), time.Second)
			}
			b.ResetTimer()
			for i := range b.N {
				h.Broadcast(frames[i])
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/sink")
		})
	}
}

func BenchmarkTimeFrame(b *testing.B) {
	b.ReportAllocs()
	for i := range b.N {
		_ = protocol.TimeFrame(int64(1795332601+i), time.Second)
	}
}

// TestBroadcastRefusesFutureTicks: one tick an hour ahead of the gateway's clock is refused,
// counted, and does not move the dedupe mark, so the next honest tick is delivered.
//
// Fails before the future check: the rogue seq became the mark and every later tick was
// dropped as a duplicate for the whole hour.
func TestBroadcastRefusesFutureTicks(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	m := metrics.New()
	h := New(m, WithClock(clock, time.Second), WithLogger(slog.New(slog.DiscardHandler)))
	s := &countSink{}
	h.Add(s)
	seq := protocol.TickSeq(now, time.Second)
	if !h.Broadcast(protocol.TimeFrame(seq, time.Second)) {
		t.Fatal("current tick dropped")
	}
	if h.Broadcast(protocol.TimeFrame(seq+3600, time.Second)) {
		t.Fatal("tick 1 h ahead delivered")
	}
	if !h.Broadcast(protocol.TimeFrame(seq+2, time.Second)) { // 2 intervals ahead: still fine
		t.Fatal("tick 2 intervals ahead dropped")
	}
	if h.Broadcast(protocol.TimeFrame(seq+3, time.Second)) {
		t.Fatal("tick 3 intervals ahead delivered")
	}
	now = now.Add(time.Second)
	if !h.Broadcast(protocol.TimeFrame(seq+3, time.Second)) {
		t.Fatal("next honest tick dropped after a future one")
	}
	if got := s.n.Load(); got != 3 {
		t.Fatalf("sink got %d frames, want 3", got)
	}
	if got := testutil.ToFloat64(m.TicksRejected.WithLabelValues("future")); got != 2 {
		t.Fatalf("ticks_rejected_total{reason=future} = %v, want 2", got)
	}
}
