package gateway

import (
	"bufio"
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/broker"
	"github.com/wsgw/wsgw/pkg/protocol"
	"github.com/wsgw/wsgw/pkg/tick"
)

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
