package gateway

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/broker"
	"github.com/wsgw/wsgw/pkg/protocol"
	"github.com/wsgw/wsgw/pkg/tick"
)

// The fan-out never waits on a socket: a client that never reads, a thousand clients at once
// and clients that flood pings do not hold back anyone else's ticks.

// TestSlowConsumer: a client that never reads does not delay 100 other clients' ticks by more
// than 100 ms, and is closed with 1008. To fill its socket buffers quickly at the default rate
// limit, the test shrinks both ends' buffers and asks for F(100000) (~21 KB) 40 times (the
// default burst): 40 answers are more than its queue of 32 plus the buffers.
func TestSlowConsumer(t *testing.T) {
	const interval = 100 * time.Millisecond
	g := startGateway(t, Options{QueueSize: 32}, interval, smallBuffers)

	type result struct {
		worst time.Duration
		ticks int
		err   error
	}
	results := make(chan result, 100)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stop := make(chan struct{})
	for i := 0; i < 100; i++ {
		c, _ := g.dial(t, fmt.Sprintf("r%d", i))
		go func() {
			var r result
			for {
				select {
				case <-stop:
					results <- r
					return
				default:
				}
				_, b, err := c.Read(ctx)
				if err != nil {
					r.err = err
					results <- r
					return
				}
				f, _ := protocol.Decode(b)
				if f.Type != protocol.TypeTime {
					continue
				}
				// From publication, not the nominal instant: the ticker's own timer slack
				// under -race is not the slow client's doing.
				lag := time.Since(g.publishedAt(f.Seq))
				r.worst = max(r.worst, lag)
				r.ticks++
			}
		}()
	}

	slow := g.dialSmallBuffer(t, "slow")
	for range 40 {
		if err := slow.Write(ctx, websocket.MessageText, []byte(`{"type":"fib","n":100000}`)); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 20*time.Second, "slow consumer closed", func() bool {
		return testutil.ToFloat64(g.m.Disconnects.WithLabelValues(reasonSlowConsumer)) == 1
	})
	time.Sleep(5 * interval) // ticks after the kick too
	close(stop)
	// The 100 ms latency bound. Under -race, with other test packages sharing the 2 cores, latency is
	// only logged: .ci/run repeats this test without -race and alone, where the bound holds.
	bound := 100 * time.Millisecond
	for i := 0; i < 100; i++ {
		r := <-results
		if r.err != nil {
			t.Fatalf("reader %d: %v", i, r.err)
		}
		if r.ticks < 5 {
			t.Fatalf("reader %d got only %d ticks", i, r.ticks)
		}
		if i == 0 {
			t.Logf("reader 0 worst lag %v (race detector: %v)", r.worst, raceEnabled)
		}
		if r.worst > bound && !raceEnabled {
			t.Fatalf("reader %d: a tick arrived %v after it was published (> %v)", i, r.worst, bound)
		}
	}
	if got := testutil.ToFloat64(g.m.SlowConsumers); got != 1 {
		t.Fatalf("slow consumers = %v, want 1", got)
	}
}

// TestThousandClients: 1000 concurrent clients each get every tick and only their own answers.
func TestThousandClients(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode")
	}
	const n = 1000
	const interval = 250 * time.Millisecond
	g := startGateway(t, Options{}, interval)
	conns := make([]*websocket.Conn, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			c, _ := g.dial(t, fmt.Sprintf("u%d", i))
			mu.Lock()
			conns[i] = c
			mu.Unlock()
		})
	}
	wg.Wait()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Record what the ticker published: under -race on 2 cores the ticker itself may skip a
	// late tick (the contract's "jump"), which is not a delivery failure.
	var pubMu sync.Mutex
	published := map[int64]bool{}
	if err := g.broker.Subscribe(ctx, func(b []byte) {
		seq, _ := protocol.TickSeqOf(b)
		pubMu.Lock()
		published[seq] = true
		pubMu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	missed := func(from, to int64) bool { // a published seq strictly between from and to
		pubMu.Lock()
		defer pubMu.Unlock()
		for s := from + 1; s < to; s++ {
			if published[s] {
				return true
			}
		}
		return false
	}
	errs := make(chan error, n)
	start := time.Now()
	for i, c := range conns {
		go func() {
			errs <- func() error {
				want := 100 + i%900 // computed by the pool, not the table
				id := fmt.Sprintf("c%d", i)
				msg := fmt.Sprintf(`{"type":"fib","n":%d,"id":"%s"}`, want, id)
				if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
					return err
				}
				retries := 0
				var seqs []int64
				answered := false
				for len(seqs) < 6 || !answered {
					_, b, err := c.Read(ctx)
					if err != nil {
						return fmt.Errorf("client %d: %w", i, err)
					}
					f, err := protocol.Decode(b)
					if err != nil {
						return err
					}
					switch f.Type {
					case protocol.TypeTime:
						if protocol.TickTime(f.Seq, interval).Before(start) {
							continue
						}
						if len(seqs) > 0 && (f.Seq <= seqs[len(seqs)-1] || missed(seqs[len(seqs)-1], f.Seq)) {
							return fmt.Errorf("client %d: tick %d after %d (missed or duplicate)", i, f.Seq, seqs[len(seqs)-1])
						}
						seqs = append(seqs, f.Seq)
					case protocol.TypeError:
						if f.Code != protocol.CodeBusy || f.ID != id || retries > 50 {
							return fmt.Errorf("client %d: unexpected %+v", i, f)
						}
						retries++ // busy is a correct answer under a burst: retry as a client would
						time.Sleep(50 * time.Millisecond)
						if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
							return err
						}
					case protocol.TypeFib:
						if f.ID != id || f.N != want || answered {
							return fmt.Errorf("client %d got someone else's answer: %+v", i, f)
						}
						answered = true
					default:
						return fmt.Errorf("client %d: unexpected %+v", i, f)
					}
				}
				return nil
			}()
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestHostileClientsDoNotStallTicks: 20 clients that never read and flood pings (reconnecting
// whenever they are closed) share a gateway in cluster mode (real redis-server, the ticker's
// publish path in-process) with 20 observers. Every observer gets every tick of the window,
// none later than a generous bound, and the hostile clients are closed as slow consumers.
//
// Fails before the fan-out only enqueued (conn.Send wrote ticks inline from the hub's
// goroutine under the shard lock, for up to 1 s per socket, and waited on the library's write
// lock held by a pong stuck on a full socket): ticks stalled for everyone for seconds and the
// canary resubscribed, dropping ticks. Measured on that code: 10 ticks lost per observer,
// ticks up to 4.2 s late, the hostile clients ended as "error", not 1008.
func TestHostileClientsDoNotStallTicks(t *testing.T) {
	testkit.Need(t, "redis-server")
	if testing.Short() {
		t.Skip("short mode")
	}
	const (
		interval  = 500 * time.Millisecond
		observers = 20
		hostile   = 20
		minWindow = 8 * time.Second
		maxWindow = 30 * time.Second
		// Generous: the observers share two loaded cores with the flood, the gateway and
		// Redis. The stall on the old code was seconds.
		latencyBound = 2 * time.Second
	)
	r := testkit.StartRedis(t)
	prefix := testkit.Prefix(t)
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The ticker: the same publish path as the ticker program (PUBLISH, then ticker:last).
	client := r.Client()
	pub := broker.NewRedis(client, broker.RedisOptions{Prefix: prefix, TickInterval: interval, Logger: slog.New(slog.DiscardHandler)})
	tickDone := make(chan struct{})
	go func() {
		defer close(tickDone)
		_ = tick.Run(ctx, pub.Publish, tick.Options{Interval: interval, Logger: slog.New(slog.DiscardHandler)})
	}()

	runDone := make(chan error, 1)
	gwCtx, stopGW := context.WithCancel(context.Background())
	defer stopGW()
	go func() {
		runDone <- Run(gwCtx, nil, []string{
			"GATEWAY_ADDR=" + addr, "GATEWAY_ID=gw-hostile", "REDIS_URL=" + r.URL(), "REDIS_PREFIX=" + prefix,
			"TICK_INTERVAL=" + interval.String(), "LOG_LEVEL=warn",
		}, &bytes.Buffer{}, &testkit.SyncBuffer{})
	}()
	t.Cleanup(func() {
		stopGW()
		select {
		case <-runDone:
		case <-time.After(20 * time.Second):
			t.Error("gateway did not stop")
		}
		cancel()
		<-tickDone
		_ = pub.Close()
	})
	base := "http://" + addr
	testkit.Eventually(t, 10*time.Second, "/readyz", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	})
	wsURL := "ws://" + addr + "/ws"

	// Observers record every seq and the worst latency from the tick's nominal instant.
	type obs struct {
		mu    sync.Mutex
		seqs  []int64
		worst time.Duration
		err   error
	}
	obsv := make([]*obs, observers)
	var wg sync.WaitGroup
	for i := range obsv {
		o := &obs{}
		obsv[i] = o
		c, _, err := websocket.Dial(ctx, wsURL+"?user=obs"+strconv.Itoa(i), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.CloseNow() })
		wg.Go(func() {
			for {
				_, b, err := c.Read(ctx)
				if err != nil {
					if ctx.Err() == nil {
						o.mu.Lock()
						o.err = err
						o.mu.Unlock()
					}
					return
				}
				f, err := protocol.Decode(b)
				if err != nil || f.Type != protocol.TypeTime {
					continue
				}
				lag := time.Since(protocol.TickTime(f.Seq, interval))
				o.mu.Lock()
				o.seqs = append(o.seqs, f.Seq)
				o.worst = max(o.worst, lag)
				o.mu.Unlock()
			}
		})
	}

	// Hostile clients: upgrade, then never read another byte, write 125-byte pings as fast as the socket
	// takes them, and start again when the gateway closes them.
	floodCtx, stopFlood := context.WithCancel(ctx)
	var hostileConns, hostileEnded atomic.Int64
	ping := bytes.Repeat(clientFrame(opPing, bytes.Repeat([]byte{'p'}, 125), -1), 64)
	var fw sync.WaitGroup
	for i := range hostile {
		fw.Go(func() {
			for floodCtx.Err() == nil {
				rc := rawDial(t, wsURL+"?user=hostile"+strconv.Itoa(i), true, 4096)
				hostileConns.Add(1)
				stop := context.AfterFunc(floodCtx, func() { rc.Close() })
				// No write deadline: a write cut short would leave half a frame. The flood
				// ends when the gateway closes the socket or the test closes it.
				for floodCtx.Err() == nil {
					if _, err := rc.Write(ping); err != nil {
						break
					}
				}
				stop()
				rc.Close()
				if floodCtx.Err() == nil {
					hostileEnded.Add(1)
				}
			}
		})
	}

	// The flood lasts until every hostile client has been closed with 1008 at least once
	// (pings are throttled to the rate limit, and a client over it for RateLimitGrace, 10 s,
	// is closed), at least minWindow and at most maxWindow.
	start := time.Now()
	kicked := func() float64 {
		return metricValue(t, base, `ws_disconnects_total{reason="rate_limit"}`) +
			metricValue(t, base, `ws_disconnects_total{reason="slow_consumer"}`)
	}
	for time.Since(start) < minWindow || kicked() < hostile && time.Since(start) < maxWindow {
		time.Sleep(250 * time.Millisecond)
	}
	window := time.Since(start)
	stopFlood()
	fw.Wait()
	time.Sleep(2 * interval) // the last ticks of the window arrive
	cancel()
	wg.Wait()

	// The window: the seqs published from 1 s after the flood started to its end, so a
	// handshake still in progress does not count as a gap.
	for i, o := range obsv {
		o.mu.Lock()
		if o.err != nil {
			t.Errorf("observer %d: %v", i, o.err)
		}
		lost := 0
		for j := 1; j < len(o.seqs); j++ {
			if d := o.seqs[j] - o.seqs[j-1]; d != 1 {
				lost += int(d - 1)
			}
		}
		want := int(window / interval)
		if lost > 0 || len(o.seqs) < want {
			t.Errorf("observer %d: %d ticks lost, %d received (want ≥ %d, none lost)", i, lost, len(o.seqs), want)
		}
		if o.worst > latencyBound {
			t.Errorf("observer %d: a tick arrived %v after its instant (> %v)", i, o.worst.Round(time.Millisecond), latencyBound)
		}
		if i == 0 {
			t.Logf("observer 0: %d ticks, worst latency %v", len(o.seqs), o.worst.Round(time.Millisecond))
		}
		o.mu.Unlock()
	}
	t.Logf("flood for %v: hostile connections %d, closed by the gateway during the flood %d, disconnects: rate_limit %v, slow_consumer %v, error %v, ping_timeout %v",
		window.Round(time.Millisecond), hostileConns.Load(), hostileEnded.Load(),
		metricValue(t, base, `ws_disconnects_total{reason="rate_limit"}`), metricValue(t, base, `ws_disconnects_total{reason="slow_consumer"}`),
		metricValue(t, base, `ws_disconnects_total{reason="error"}`), metricValue(t, base, `ws_disconnects_total{reason="ping_timeout"}`))
	if k := kicked(); k < hostile {
		t.Errorf("hostile clients closed with 1008 (rate_limit or slow_consumer) = %v, want ≥ %d", k, hostile)
	}
}

// metricValue reads one sample (name with labels, as /metrics prints it) from /metrics.
func metricValue(t testing.TB, base, sample string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", sample, err)
			}
			return f
		}
	}
	return 0
}
