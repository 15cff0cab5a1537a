package termclient

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// TestMain fails the package when a client goroutine outlives the tests: a leaked reader or
// input goroutine is a connection or a pipe nobody will close.
func TestMain(m *testing.M) { testkit.MainWithLeakCheck(m) }

var tickLine = regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d  tick \d+$`)

func TestPipedRequestThenEOF(t *testing.T) {
	g := newFakeGateway(t, func(g *fakeGateway) { g.delay = 300 * time.Millisecond })
	r := start(t, "-url", g.url(), "-user", "alice")
	r.typeLine(t, "10")
	r.typeLine(t, "fib x")
	r.stdin.Close()
	if err := r.wait(t, 10*time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}
	out := r.stdout.String()
	for _, want := range []string{
		"connected to gw-test as alice (conn c-0)\n",
		"F(10) = 55\n",
		"error (invalid_n): n must be an integer from 0 to 100000\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if !tickLine.MatchString(out) {
		t.Errorf("stdout has no tick line:\n%s", out)
	}
	waitFor(t, 5*time.Second, "the gateway to see the close", func() bool { return len(g.clientCloses()) == 1 })
	if got := g.clientCloses()[0]; got != websocket.StatusNormalClosure {
		t.Errorf("client closed with %v, want 1000", got)
	}
}

func TestReconnectsAfterDrainHonouringRetry(t *testing.T) {
	const retry = 200 * time.Millisecond
	g := newFakeGateway(t, func(g *fakeGateway) {
		g.script = func(i int, c *websocket.Conn) bool {
			if i == 0 {
				time.Sleep(100 * time.Millisecond)
				g.markClose()
				_ = c.Close(websocket.StatusGoingAway, protocol.RetryReason(retry))
				return true
			}
			return false
		}
	})
	r := start(t, "-url", g.url(), "-user", "alice")
	first := g.nextAccept(t, 5*time.Second)
	second := g.nextAccept(t, 5*time.Second)
	gap := second.at.Sub(g.firstClose())
	if gap < retry || gap >= 2*time.Second {
		t.Errorf("reconnected %s after the drain began, want ≥ %s and < 2s", gap, retry)
	}
	if first.user != "alice" || second.user != "alice" {
		t.Errorf("user = %q then %q, want alice both times", first.user, second.user)
	}
	waitFor(t, 5*time.Second, "the second welcome", func() bool {
		return strings.Count(r.stdout.String(), "connected to gw-test as alice") == 2
	})
	if want := "disconnected (1001 going away); reconnecting in 0.2s"; !strings.Contains(r.stderr.String(), want) {
		t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
	}
	r.typeLine(t, "12")
	waitFor(t, 5*time.Second, "F(12)", func() bool { return strings.Contains(r.stdout.String(), "F(12) = 144\n") })
	r.stdin.Close()
	if err := r.wait(t, 10*time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestReconnectsAfterDropKeepingGuestName(t *testing.T) {
	g := newFakeGateway(t, func(g *fakeGateway) {
		g.script = func(i int, c *websocket.Conn) bool {
			if i == 0 {
				time.Sleep(100 * time.Millisecond)
				_ = c.CloseNow() // as if the gateway was killed: no close frame
				return true
			}
			return false
		}
	})
	r := start(t, "-url", g.url())
	if first := g.nextAccept(t, 5*time.Second); first.user != "" {
		t.Errorf("first connection sent user %q, want none", first.user)
	}
	second := g.nextAccept(t, 5*time.Second)
	if want := protocol.GuestPrefix + "a1b2c3"; second.user != want {
		t.Errorf("reconnect sent user %q, want the assigned %q", second.user, want)
	}
	waitFor(t, 5*time.Second, "the second welcome", func() bool {
		return strings.Count(r.stdout.String(), "connected to gw-test") == 2
	})
	if want := "disconnected (connection lost: "; !strings.Contains(r.stderr.String(), want) {
		t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
	}
	r.typeLine(t, "fib 20")
	waitFor(t, 5*time.Second, "F(20)", func() bool { return strings.Contains(r.stdout.String(), "F(20) = 6765\n") })
	r.cancel()
	if err := r.wait(t, 10*time.Second); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	waitFor(t, 5*time.Second, "the gateway to see the close", func() bool {
		return slices.Contains(g.clientCloses(), websocket.StatusNormalClosure)
	})
}

func TestNoReconnectAfterPolicyClose(t *testing.T) {
	g := newFakeGateway(t, func(g *fakeGateway) {
		g.script = func(i int, c *websocket.Conn) bool {
			_ = c.Close(websocket.StatusPolicyViolation, "too slow")
			return true
		}
	})
	r := start(t, "-url", g.url(), "-user", "alice")
	err := r.wait(t, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "1008 policy violation: too slow") {
		t.Fatalf("Run = %v, want an error naming 1008 and the reason", err)
	}
	g.nextAccept(t, time.Second)
	select {
	case <-g.accepted:
		t.Fatal("client reconnected after 1008")
	case <-time.After(700 * time.Millisecond):
	}
}

func TestHandshakeRefused(t *testing.T) {
	g := newFakeGateway(t, nil)
	r := start(t, "-url", g.url(), "-user", "no spaces")
	err := r.wait(t, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "HTTP 400") || !strings.Contains(err.Error(), "user may contain only") {
		t.Fatalf("Run = %v, want HTTP 400 with the server's reason", err)
	}
}

func TestFirstConnectFailureIsAnError(t *testing.T) {
	g := newFakeGateway(t, nil)
	u := g.url()
	g.srv.Close() // nothing listens there any more
	r := start(t, "-url", u)
	if err := r.wait(t, 15*time.Second); err == nil {
		t.Fatal("Run = nil, want the connection error")
	}
}

func TestLargeAnswerPrintedWhole(t *testing.T) {
	big := strings.Repeat("1234567890", 20_000) // 200 KB, well over coder/websocket's 32 KiB default
	g := newFakeGateway(t, func(g *fakeGateway) { g.results = map[int]string{99999: big} })
	r := start(t, "-url", g.url())
	r.typeLine(t, "99999")
	r.stdin.Close()
	if err := r.wait(t, 10*time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !strings.Contains(r.stdout.String(), "F(99999) = "+big+"\n") {
		t.Errorf("the 200 KB answer was not printed whole (stdout is %d bytes)", len(r.stdout.String()))
	}
}

func TestHelpAndBadFlags(t *testing.T) {
	var stdout, stderr testkit.SyncBuffer
	if err := Run(context.Background(), []string{"-h"}, strings.NewReader(""), &stdout, &stderr); err != nil {
		t.Errorf("Run -h = %v, want nil", err)
	}
	if !strings.Contains(stderr.String(), "-url") || !strings.Contains(stderr.String(), "-user") {
		t.Errorf("usage lacks the flags:\n%s", stderr.String())
	}
	for _, args := range [][]string{{"-nope"}, {"extra"}, {"-url", "http://x/ws"}} {
		if err := Run(context.Background(), args, strings.NewReader(""), &stdout, &stderr); err == nil {
			t.Errorf("Run %q = nil, want an error", args)
		}
	}
}
