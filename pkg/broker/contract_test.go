package broker

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/wsgw/wsgw/pkg/protocol"
)

// eventually is how long a Redis-backed broker may take to deliver.
const eventually = 2 * time.Second

// recorder collects the seqs of the frames it is given.
type recorder struct {
	mu   sync.Mutex
	seqs []int64
}

func (r *recorder) fn(frame []byte) {
	seq, err := protocol.TickSeqOf(frame)
	if err != nil {
		seq = -1
	}
	r.mu.Lock()
	r.seqs = append(r.seqs, seq)
	r.mu.Unlock()
}

func (r *recorder) get() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seqs)
}

// waitLen waits until r holds at least n frames.
func (r *recorder) waitLen(t *testing.T, n int) []int64 {
	t.Helper()
	deadline := time.Now().Add(eventually)
	for {
		got := r.get()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d frames, want %d: %v", len(got), n, got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func frame(seq int64) []byte { return protocol.TimeFrame(seq, time.Second) }

// runContract checks the Broker contract against brokers made by newBroker.
func runContract(t *testing.T, newBroker func(t *testing.T) Broker) {
	t.Run("EveryFrameOnceInOrder", func(t *testing.T) {
		t.Parallel()
		b := newBroker(t)
		ctx := context.Background()
		var r1, r2 recorder
		if err := b.Subscribe(ctx, r1.fn); err != nil {
			t.Fatal(err)
		}
		if err := b.Subscribe(ctx, r2.fn); err != nil {
			t.Fatal(err)
		}
		var want []int64
		for seq := int64(1000); seq < 1100; seq++ {
			want = append(want, seq)
			if err := b.Publish(ctx, frame(seq)); err != nil {
				t.Fatal(err)
			}
		}
		for _, r := range []*recorder{&r1, &r2} {
			r.waitLen(t, len(want))
		}
		time.Sleep(50 * time.Millisecond) // room for duplicates to show up
		for i, r := range []*recorder{&r1, &r2} {
			if got := r.get(); !slices.Equal(got, want) {
				t.Errorf("subscriber %d got %v, want %v", i, got, want)
			}
		}
	})

	t.Run("SameBytes", func(t *testing.T) {
		t.Parallel()
		b := newBroker(t)
		ctx := context.Background()
		got := make(chan []byte, 1)
		if err := b.Subscribe(ctx, func(f []byte) { got <- slices.Clone(f) }); err != nil {
			t.Fatal(err)
		}
		f := frame(1795332601)
		if err := b.Publish(ctx, f); err != nil {
			t.Fatal(err)
		}
		select {
		case g := <-got:
			if string(g) != string(f) {
				t.Fatalf("got %s, want %s", g, f)
			}
		case <-time.After(eventually):
			t.Fatal("frame not delivered")
		}
	})

	t.Run("CancelStopsDelivery", func(t *testing.T) {
		t.Parallel()
		b := newBroker(t)
		var stay, gone recorder
		if err := b.Subscribe(context.Background(), stay.fn); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		if err := b.Subscribe(ctx, gone.fn); err != nil {
			t.Fatal(err)
		}
		if err := b.Publish(context.Background(), frame(1)); err != nil {
			t.Fatal(err)
		}
		gone.waitLen(t, 1)
		stay.waitLen(t, 1)
		cancel()
		time.Sleep(20 * time.Millisecond) // context.AfterFunc runs on its own goroutine
		if err := b.Publish(context.Background(), frame(2)); err != nil {
			t.Fatal(err)
		}
		stay.waitLen(t, 2)
		time.Sleep(50 * time.Millisecond)
		if got := gone.get(); len(got) != 1 {
			t.Fatalf("cancelled subscriber got %v", got)
		}
	})

	t.Run("Close", func(t *testing.T) {
		t.Parallel()
		b := newBroker(t)
		var r recorder
		if err := b.Subscribe(context.Background(), r.fn); err != nil {
			t.Fatal(err)
		}
		if h := b.Health(); !h.OK() {
			t.Fatalf("health: %+v", h)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if err := b.Publish(context.Background(), frame(1)); !errors.Is(err, ErrClosed) {
			t.Fatalf("publish after close: %v", err)
		}
		if err := b.Subscribe(context.Background(), r.fn); !errors.Is(err, ErrClosed) {
			t.Fatalf("subscribe after close: %v", err)
		}
		if err := b.Close(); err != nil {
			t.Fatalf("second close: %v", err)
		}
		if got := r.get(); len(got) != 0 {
			t.Fatalf("got %v after close", got)
		}
	})
}

func TestMemoryContract(t *testing.T) {
	t.Parallel()
	runContract(t, func(t *testing.T) Broker {
		b := NewMemory()
		t.Cleanup(func() { b.Close() })
		return b
	})
}
