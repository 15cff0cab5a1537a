package gateway

import (
	"context"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// needPoller skips where idle sockets keep their reader (no epoll).
func needPoller(t *testing.T, s *Server) {
	t.Helper()
	if s.poller == nil {
		t.Skipf("no read poller on %s: every connection keeps its reader goroutine", runtime.GOOS)
	}
}

// openRaw opens a raw connection and reads its welcome.
func openRaw(t *testing.T, g *testGateway, user string) *rawConn {
	t.Helper()
	rc := rawDial(t, g.url+"?user="+user, true, 0)
	if f := readRawFrame(t, rc); f.Type != protocol.TypeWelcome {
		t.Fatalf("first frame %+v", f)
	}
	return rc
}

// TestIdleSocketsHoldNoGoroutine: an idle connection costs no goroutine; its socket waits in
// the poller. Fails before the poller: every connection kept a reader blocked in the library,
// 8 KiB of stack each, so 50 sockets added 50 goroutines.
func TestIdleSocketsHoldNoGoroutine(t *testing.T) {
	g := startGateway(t, Options{}, 0)
	needPoller(t, g.srv)
	openRaw(t, g, "first") // the server's own goroutines are all started now
	var base int
	testkit.Eventually(t, 5*time.Second, "goroutines settled", func() bool {
		n := runtime.NumGoroutine()
		settled := n == base
		base = n
		return settled
	})
	for i := range 50 {
		openRaw(t, g, "idle"+string(rune('a'+i%26)))
	}
	testkit.Eventually(t, 5*time.Second, "50 idle sockets, fewer than 10 more goroutines", func() bool {
		return runtime.NumGoroutine() < base+10
	})
	if n := g.srv.Connections(); n != 51 {
		t.Fatalf("%d connections, want 51", n)
	}
}

// TestParkedReaderReadsEveryFrame: a parked socket wakes for whatever arrives and the frames
// are read as the client sent them, however they are cut: one byte per write, two frames in
// one write, a fragmented message with a ping between its fragments (the reader must not
// park inside a message: the yield frame there would be a protocol error).
func TestParkedReaderReadsEveryFrame(t *testing.T) {
	g := startGateway(t, Options{IdleRead: time.Millisecond}, 0) // park at every pause
	needPoller(t, g.srv)
	rc := openRaw(t, g, "cuts")
	pause := func() { time.Sleep(20 * time.Millisecond) } // long enough for the reader to park

	req := func(id string, n int) []byte {
		return clientFrame(opText, []byte(`{"type":"fib","id":"`+id+`","n":`+strconv.Itoa(n)+`}`), -1)
	}
	expect := func(id, result string) {
		t.Helper()
		if f := readRawFrame(t, rc); f.Type != protocol.TypeFib || f.ID != id || f.Result != result {
			t.Fatalf("got %+v, want fib %s = %s", f, id, result)
		}
	}
	send := func(b []byte) {
		t.Helper()
		if _, err := rc.Write(b); err != nil {
			t.Fatal(err)
		}
	}

	pause()
	for _, b := range req("bytes", 10) { // one byte at a time, the reader parking in between
		send([]byte{b})
		time.Sleep(2 * time.Millisecond)
	}
	expect("bytes", "55")

	pause()
	send(append(req("two-a", 11), req("two-b", 12)...))
	expect("two-a", "89")
	expect("two-b", "144")

	pause()
	first := clientFrame(opText, []byte(`{"type":"fib",`), -1)
	first[0] &^= 0x80 // FIN clear: more fragments follow
	last := clientFrame(0x0, []byte(`"id":"frag","n":13}`), -1)
	send(first)
	pause()
	send(clientFrame(opPing, []byte("between"), -1))
	if op, p, err := rc.readServerFrame(time.Now().Add(5 * time.Second)); err != nil || op != 0xA || string(p) != "between" {
		t.Fatalf("pong: op %x %q %v", op, p, err)
	}
	pause()
	send(last)
	expect("frag", "233")
}

// TestParkedSocketsKeepAliveAndEnd: pings and pongs go on while the reader is parked between
// them (no ping timeout for a client that answers), a client that does not answer is closed
// with ping_timeout, and a parked socket that the client closes or drops is cleaned up (the
// disconnect recorded): the reader is started again for each.
func TestParkedSocketsKeepAliveAndEnd(t *testing.T) {
	g := startGateway(t, Options{PingInterval: 100 * time.Millisecond, PingTimeout: 500 * time.Millisecond, IdleRead: time.Millisecond}, 0)
	needPoller(t, g.srv)

	// A library client answers pings while something reads.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	alive, _ := g.dial(t, "alive")
	readCtx := alive.CloseRead(ctx)

	openRaw(t, g, "silent") // reads nothing more: never answers a ping

	closer := openRaw(t, g, "closer")
	dropper := openRaw(t, g, "dropper")
	time.Sleep(50 * time.Millisecond) // parked
	if _, err := closer.Write(clientFrame(opClose, []byte{0x03, 0xe8}, -1)); err != nil {
		t.Fatal(err)
	}
	_ = dropper.Close()

	disconnects := func(reason string) float64 {
		return testutil.ToFloat64(g.m.Disconnects.WithLabelValues(reason))
	}
	testkit.Eventually(t, 10*time.Second, "closer, dropper and silent disconnected", func() bool {
		return g.srv.Connections() == 1
	})
	if n := disconnects(reasonPingTimeout); n != 1 {
		t.Fatalf("%v ping timeouts, want 1 (the silent client)", n)
	}
	if n := disconnects(reasonClosed); n != 2 {
		t.Fatalf("%v closed, want 2 (closer and dropper)", n)
	}
	time.Sleep(time.Second) // ten more pings for the live one
	if readCtx.Err() != nil || g.srv.Connections() != 1 {
		t.Fatalf("the client answering pings was closed: %v, %d connections", readCtx.Err(), g.srv.Connections())
	}
	if n := disconnects(reasonPingTimeout); n != 1 {
		t.Fatalf("%v ping timeouts, want 1", n)
	}
	_ = alive.Close(websocket.StatusNormalClosure, "")
}
