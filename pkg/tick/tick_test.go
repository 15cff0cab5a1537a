package tick

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgw/wsgw/pkg/protocol"
)

type recorder struct {
	mu     sync.Mutex
	seqs   []int64
	at     []time.Time
	frames [][]byte
}

func (r *recorder) publish(_ context.Context, frame []byte) error {
	seq, err := protocol.TickSeqOf(frame)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seqs = append(r.seqs, seq)
	r.at = append(r.at, time.Now())
	r.frames = append(r.frames, frame)
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seqs)
}

var quiet = slog.New(slog.DiscardHandler)

// TestRunAlignedAndConsecutive: ticks land on interval boundaries, seq grows by one, and each
// frame's time is the instant its seq stands for.
func TestRunAlignedAndConsecutive(t *testing.T) {
	const interval = 50 * time.Millisecond
	var r recorder
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, r.publish, Options{Interval: interval, Logger: quiet}) }()
	for r.count() < 8 {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	skipped := 0
	for i, seq := range r.seqs {
		if want := string(protocol.TimeFrame(seq, interval)); string(r.frames[i]) != want {
			t.Fatalf("frame %s, want %s", r.frames[i], want)
		}
		if lag := r.at[i].Sub(protocol.TickTime(seq, interval)); lag < 0 || lag > interval {
			t.Fatalf("tick %d published %v after its instant", seq, lag)
		}
		if i > 0 {
			if seq <= r.seqs[i-1] {
				t.Fatalf("seq went %d → %d", r.seqs[i-1], seq)
			}
			skipped += int(seq - r.seqs[i-1] - 1)
		}
	}
	if skipped > 1 { // a late timer may skip one under load, never more here
		t.Fatalf("skipped %d ticks: %v", skipped, r.seqs)
	}
}

type fakeLease struct {
	hold     atomic.Bool
	failing  atomic.Bool // Hold reports an error, as when Redis is down
	released atomic.Int32
}

func (l *fakeLease) Hold(context.Context) (bool, error) {
	if l.failing.Load() {
		return false, errors.New("redis down")
	}
	return l.hold.Load(), nil
}
func (l *fakeLease) Release(context.Context) error { l.released.Add(1); return nil }

// TestRunPublishesOnlyWhileHolding: no lease, no ticks; the lease gained, ticks; released on
// exit.
func TestRunPublishesOnlyWhileHolding(t *testing.T) {
	const interval = 20 * time.Millisecond
	var r recorder
	l := &fakeLease{}
	l.failing.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, r.publish, Options{Interval: interval, Lease: l, Logger: quiet}) }()
	time.Sleep(6 * interval)
	if n := r.count(); n != 0 {
		t.Fatalf("published %d ticks without the lease", n)
	}
	l.failing.Store(false)
	l.hold.Store(true)
	deadline := time.Now().Add(5 * time.Second)
	for r.count() < 3 {
		if time.Now().After(deadline) {
			t.Fatal("no ticks after gaining the lease")
		}
		time.Sleep(5 * time.Millisecond)
	}
	l.hold.Store(false) // lost to another ticker
	time.Sleep(2 * interval)
	n := r.count()
	time.Sleep(5 * interval)
	if r.count() != n {
		t.Fatalf("published after losing the lease")
	}
	cancel()
	<-done
	if l.released.Load() != 0 {
		t.Fatal("released a lease it no longer held")
	}

	// Held at exit: released once.
	l2 := &fakeLease{}
	l2.hold.Store(true)
	ctx2, cancel2 := context.WithCancel(context.Background())
	go func() { done <- Run(ctx2, r.publish, Options{Interval: interval, Lease: l2, Logger: quiet}) }()
	time.Sleep(4 * interval)
	cancel2()
	<-done
	if l2.released.Load() != 1 {
		t.Fatalf("released %d times at exit, want 1", l2.released.Load())
	}
}
