package broker

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/metrics"
)

// gate blocks the subscriber callback until it is opened: a fan-out stuck on slow sockets.
type gate struct {
	once sync.Once
	ch   chan struct{}
}

func newGate() *gate  { return &gate{ch: make(chan struct{})} }
func (g *gate) wait() { <-g.ch }
func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }

// subscribeGated subscribes r to b through a callback that blocks on its first frame until
// the returned gate opens.
func subscribeGated(t *testing.T, b *Redis, r *recorder) *gate {
	t.Helper()
	g := newGate()
	t.Cleanup(g.open)
	first := true
	if err := b.Subscribe(context.Background(), func(f []byte) {
		if first {
			first = false
			g.wait()
		}
		r.fn(f)
	}); err != nil {
		t.Fatal(err)
	}
	return g
}

// TestRedisSlowConsumerNoResubscribeNoLoss: the callback blocks for 3 s (the hub stuck on
// slow sockets) while the ticker publishes every 20 ms. The canary counts frames read from
// Redis, so the subscription is not taken for wedged, and every frame is delivered once the
// callback returns.
//
// Fails before the broker read frames into its own queue: the reader waited inside the
// callback, the canary saw no frame received and resubscribed (dropping what the old
// subscription had read), and go-redis dropped frames after its 1 s send timeout.
func TestRedisSlowConsumerNoResubscribeNoLoss(t *testing.T) {
	t.Parallel()
	srv := testkit.StartRedis(t)
	prefix := testkit.Prefix(t)
	m := metrics.New()
	b := NewRedis(srv.Client(), RedisOptions{Prefix: prefix, Logger: quietLogger(), Metrics: m,
		TickInterval: 20 * time.Millisecond, CheckInterval: 50 * time.Millisecond})
	t.Cleanup(func() { b.Close() })
	var r recorder
	g := subscribeGated(t, b, &r)
	pub := newTestRedis(t, srv.Client(), prefix, nil)
	ctx := context.Background()
	const n = 150 // 3 s at 20 ms
	for seq := int64(1); seq <= n; seq++ {
		if err := pub.Publish(ctx, frame(seq)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := testutil.ToFloat64(m.PubSubReconnects); got != 0 {
		t.Errorf("resubscribed %v times while the consumer was slow, want 0", got)
	}
	if h := b.Health(); h.Subscription != "" {
		t.Errorf("health while the consumer was slow: %+v", h)
	}
	g.open()
	got := r.waitLen(t, n)
	for i, seq := range got[:n] {
		if seq != int64(i+1) {
			t.Fatalf("frame %d is seq %d, want %d (lost or reordered): %v", i, seq, i+1, got)
		}
	}
}

// TestRedisResubscribeKeepsBufferedFrames: frames read from the subscription but not yet
// handed to the (blocked) callback survive a resubscription.
//
// Fails before the broker kept read frames apart from the subscription that read them: a
// resubscription discarded every frame the old subscription had received.
func TestRedisResubscribeKeepsBufferedFrames(t *testing.T) {
	t.Parallel()
	srv := testkit.StartRedis(t)
	c := srv.Client()
	prefix := testkit.Prefix(t)
	m := metrics.New()
	b := NewRedis(c, RedisOptions{Prefix: prefix, Logger: quietLogger(), Metrics: m,
		CheckInterval: 50 * time.Millisecond})
	t.Cleanup(func() { b.Close() })
	var r recorder
	g := subscribeGated(t, b, &r)
	pub := newTestRedis(t, c, prefix, nil)
	ctx := context.Background()
	for seq := int64(1); seq <= 5; seq++ {
		if err := pub.Publish(ctx, frame(seq)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond) // read by the broker, stuck behind the callback
	// Deaf in the canary's eyes: ticker:last far ahead of anything received.
	c.Set(ctx, prefix+"ticker:last", 100, time.Minute)
	testkit.Eventually(t, 5*time.Second, "a resubscription", func() bool { return testutil.ToFloat64(m.PubSubReconnects) >= 1 })
	g.open()
	if err := pub.Publish(ctx, frame(101)); err != nil {
		t.Fatal(err)
	}
	got := r.waitLen(t, 6)
	want := []int64{1, 2, 3, 4, 5, 101}
	for i, seq := range want {
		if got[i] != seq {
			t.Fatalf("delivered %v, want %v", got, want)
		}
	}
}
