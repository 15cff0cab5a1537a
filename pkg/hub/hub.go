// Package hub fans tick frames out to the connections of one gateway process.
//
// One broker subscription per process feeds Broadcast; Broadcast hands the same immutable
// []byte to every registered Sink. The set is split into shards, each with its own lock, and a
// tick is delivered to the shards in parallel on up to GOMAXPROCS goroutines, so a 10k-socket
// burst uses every core and Add/Remove contend on one shard only.
//
// Entry points: New, Hub.Add, Hub.Broadcast.
package hub

import (
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsgw/wsgw/pkg/metrics"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// Sink receives frames. Send runs on a hub goroutine under the lock of the sink's shard, so it
// must only enqueue: queue the frame (or drop the sink as a slow consumer) and return, with no
// I/O and no wait on anything but a short lock of its own; the socket write happens elsewhere
// (the gateway's writer pool). One slow sink would otherwise delay every sink after it in the
// shard, and the next tick. The frame is shared and must not be modified. Send must not call
// Add or the sink's remove function.
type Sink interface {
	Send(frame []byte)
}

// Hub is a sharded set of sinks. Safe for concurrent use.
type Hub struct {
	shards  []shard
	next    atomic.Uint64 // round-robin shard choice for Add
	lastSeq atomic.Int64  // newest seq forwarded; older or equal ones are dropped
	workers int
	m       *metrics.Metrics

	now        func() time.Time // the gateway's clock
	interval   time.Duration    // TICK_INTERVAL: ticks more than 2 ahead of now are refused
	log        *slog.Logger
	lastFuture atomic.Int64 // unix nanos of the last "future tick" log line
}

// An Option tunes New.
type Option func(*Hub)

// WithClock sets the clock ticks are checked against (defaults to time.Now) and the tick
// interval (defaults to 1s): a tick whose instant is more than 2 intervals ahead of the clock
// is refused.
func WithClock(now func() time.Time, interval time.Duration) Option {
	return func(h *Hub) {
		if now != nil {
			h.now = now
		}
		if interval > 0 {
			h.interval = interval
		}
	}
}

// WithLogger sets where refused ticks are logged (at most one line per 10 s). Defaults to
// slog.Default().
func WithLogger(log *slog.Logger) Option {
	return func(h *Hub) {
		if log != nil {
			h.log = log
		}
	}
}

type shard struct {
	mu    sync.Mutex
	sinks []Sink       // dense, for fast iteration
	index map[Sink]int // position in sinks, for O(1) removal
	_     [40]byte     // keep neighbouring shards' locks off one cache line
}

// New returns an empty hub. m may be nil.
func New(m *metrics.Metrics, opts ...Option) *Hub {
	n := runtime.GOMAXPROCS(0) * 4
	h := &Hub{shards: make([]shard, n), workers: runtime.GOMAXPROCS(0), m: m,
		now: time.Now, interval: time.Second, log: slog.Default()}
	for _, o := range opts {
		o(h)
	}
	for i := range h.shards {
		h.shards[i].index = make(map[Sink]int)
	}
	return h
}

// Add registers s and returns the function that removes it (idempotent).
func (h *Hub) Add(s Sink) (remove func()) {
	sh := &h.shards[h.next.Add(1)%uint64(len(h.shards))]
	sh.mu.Lock()
	sh.index[s] = len(sh.sinks)
	sh.sinks = append(sh.sinks, s)
	sh.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { sh.remove(s) }) }
}

func (sh *shard) remove(s Sink) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i, ok := sh.index[s]
	if !ok {
		return
	}
	last := len(sh.sinks) - 1
	sh.sinks[i] = sh.sinks[last]
	sh.index[sh.sinks[i]] = i
	sh.sinks[last] = nil
	sh.sinks = sh.sinks[:last]
	delete(sh.index, s)
}

// Len returns the number of registered sinks.
func (h *Hub) Len() int {
	n := 0
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		n += len(sh.sinks)
		sh.mu.Unlock()
	}
	return n
}

// Broadcast delivers a time frame to every sink unless its seq is not newer than the last one
// broadcast (a duplicate from a second ticker, or a stale frame after a failover) or its
// instant is more than 2 intervals ahead of the hub's clock (a rogue publish or a ticker
// whose clock jumped: accepting it would move the dedupe mark into the future and silence
// every later tick). A refused future tick leaves the mark where it was. It returns whether
// the frame was delivered. Frames that are not time frames are dropped.
func (h *Hub) Broadcast(frame []byte) bool {
	seq, err := protocol.TickSeqOf(frame)
	if err != nil {
		return false
	}
	if h.future(frame, seq) {
		return false
	}
	for {
		last := h.lastSeq.Load()
		if seq <= last {
			if h.m != nil {
				h.m.TicksDuplicate.Inc()
			}
			return false
		}
		if h.lastSeq.CompareAndSwap(last, seq) {
			break
		}
	}
	start := time.Now()
	h.deliver(frame)
	if h.m != nil {
		h.m.TicksForwarded.Inc()
		h.m.TickFanout.Observe(time.Since(start).Seconds())
	}
	return true
}

// future reports whether frame stands for an instant more than 2 intervals ahead of the
// hub's clock, counting and logging (at most once per 10 s) when it does. The instant is read
// from the frame's time field, so a gateway whose TICK_INTERVAL differs from the ticker's
// does not misjudge it.
func (h *Hub) future(frame []byte, seq int64) bool {
	at, err := protocol.TickTimeOf(frame)
	if err != nil {
		return false // the seq parsed: judge it by seq alone, as before
	}
	now := h.now()
	ahead := at.Sub(now)
	if ahead <= 2*h.interval {
		return false
	}
	if h.m != nil {
		h.m.TicksRejected.WithLabelValues("future").Inc()
	}
	last := h.lastFuture.Load()
	if now.UnixNano()-last >= int64(10*time.Second) && h.lastFuture.CompareAndSwap(last, now.UnixNano()) {
		h.log.Warn("hub: tick from the future refused", "seq", seq, "time", at, "ahead", ahead,
			"mark", h.lastSeq.Load())
	}
	return true
}

// deliver calls Send(frame) on every sink, shards in parallel.
func (h *Hub) deliver(frame []byte) {
	var wg sync.WaitGroup
	var next atomic.Int64
	work := func() {
		for {
			i := int(next.Add(1)) - 1
			if i >= len(h.shards) {
				return
			}
			sh := &h.shards[i]
			sh.mu.Lock()
			for _, s := range sh.sinks {
				s.Send(frame)
			}
			sh.mu.Unlock()
		}
	}
	for range h.workers - 1 {
		wg.Go(work)
	}
	work()
	wg.Wait()
}
