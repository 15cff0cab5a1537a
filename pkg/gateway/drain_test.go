package gateway

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// TestRunDrainDelay runs the real program with DRAIN_DELAY and cancels it (SIGTERM): from that
// instant /readyz answers 503 and a new upgrade gets HTTP 503 (so a load balancer retries it on
// another replica), while the open socket keeps receiving ticks for DRAIN_DELAY; only then
// does it get its 1001, and Run returns nil.
//
// Fails before DRAIN_DELAY existed ("timed out after 1s waiting for /readyz 503"): Run closed
// its listener at the first instant of the drain, so /readyz and new upgrades met a refused
// connection, and the 1001s went out at once.
func TestRunDrainDelay(t *testing.T) {
	const delay = 1500 * time.Millisecond
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := startRun(t, ctx, addr, []string{"GATEWAY_ADDR=" + addr, "TICK_INTERVAL=100ms", "DRAIN_DELAY=" + delay.String(), "SHUTDOWN_TIMEOUT=6s"},
		&bytes.Buffer{})
	c, _ := dialWelcome(t, "ws://"+addr+"/ws", "ana")
	rctx, rcancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer rcancel()

	// The socket's frames, with their arrival times, from a reader of its own.
	type arrival struct {
		at  time.Time
		typ string
		err error
	}
	frames := make(chan arrival, 100)
	go func() {
		for {
			_, b, err := c.Read(rctx)
			if err != nil {
				frames <- arrival{at: time.Now(), err: err}
				return
			}
			f, _ := protocol.Decode(b)
			frames <- arrival{at: time.Now(), typ: f.Type}
		}
	}()

	cancel()
	start := time.Now()
	// Unready and refusing upgrades with 503 at once, during the delay.
	testkit.Eventually(t, time.Second, "/readyz 503", func() bool { return get(addr, "/readyz") == http.StatusServiceUnavailable })
	_, resp, err := websocket.Dial(rctx, "ws://"+addr+"/ws?user=bo", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		t.Fatalf("upgrade during the drain delay: err %v, status %d, want HTTP 503", err, code)
	}
	if since := time.Since(start); since > delay/2 {
		t.Fatalf("checks took %v, too slow to say anything about the delay", since)
	}

	ticks := 0
	var closed arrival
	for a := range frames {
		if a.err != nil {
			closed = a
			break
		}
		if a.typ == protocol.TypeTime {
			ticks++
		}
	}
	if got := closed.at.Sub(start); got < delay-100*time.Millisecond || got > delay+3*time.Second {
		t.Errorf("1001 came %v after SIGTERM, want about DRAIN_DELAY (%v)", got, delay)
	}
	// 100 ms ticks for 1.5 s: 15 expected; allow a loaded machine to lose many.
	if ticks < 5 {
		t.Errorf("%d ticks during the drain delay, want the socket still served (about 15)", ticks)
	}
	var ce websocket.CloseError
	if !errors.As(closed.err, &ce) || ce.Code != websocket.StatusGoingAway {
		t.Fatalf("close = %v, want 1001", closed.err)
	}
	if _, ok := protocol.ParseRetry(ce.Reason); !ok {
		t.Fatalf("1001 reason %q, want {\"retry_ms\":N}", ce.Reason)
	}
	runReturned(t, done, "the drain")
}

// TestDrainDelayBoundedByContext: SHUTDOWN_TIMEOUT bounds the whole drain, the delay included;
// a context that ends during the delay ends it.
func TestDrainDelayBoundedByContext(t *testing.T) {
	g := startGateway(t, Options{DrainDelay: time.Hour}, 50*time.Millisecond)
	c, _ := g.dial(t, "ana")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	g.srv.Drain(ctx)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Drain took %v with a 300ms context, want it bounded by the context", d)
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer rcancel()
	var err error
	for err == nil {
		_, _, err = c.Read(rctx)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("socket still open after Drain returned")
	}
}

// get answers the status of GET path on addr, 0 when the request fails.
func get(addr, path string) int {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
