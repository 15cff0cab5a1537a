package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// A raw WebSocket client for the tests that must send what no well-behaved library sends
// (a header declaring 64 MiB, invalid UTF-8, a ping flood without ever reading) or must see
// exactly when the server's close frame arrives; after it, the frame-level tests that use it:
// protocol hygiene (close codes, a frame sent with the handshake, idle keep-alive) and the
// read poller (idle sockets parked without a goroutine).

// rawConn is an upgraded connection driven by hand. br is nil when the upgrade was sent
// without reading the response (a client that never reads).
type rawConn struct {
	net.Conn
	br *bufio.Reader
}

// rawDial opens a TCP connection to the ws:// URL u and sends the upgrade request. With
// readResponse it waits for the 101; without, it reads nothing at all. rcvbuf > 0 shrinks the
// client's receive buffer before connecting, so a client that never reads backs the server up
// quickly.
func rawDial(t testing.TB, u string, readResponse bool, rcvbuf int) *rawConn {
	t.Helper()
	rc := rawDialSending(t, u, rcvbuf, nil)
	if readResponse {
		rc.readUpgrade(t)
	}
	return rc
}

// rawDialSending sends the upgrade request followed by first in one write, and reads nothing.
func rawDialSending(t testing.TB, u string, rcvbuf int, first []byte) *rawConn {
	t.Helper()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	if rcvbuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	nc, err := d.Dial("tcp", pu.Host)
	if err != nil {
		t.Fatalf("raw dial %s: %v", pu.Host, err)
	}
	t.Cleanup(func() { nc.Close() })
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", pu.RequestURI(), pu.Host)
	_ = nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Write(append([]byte(req), first...)); err != nil {
		t.Fatalf("raw upgrade request: %v", err)
	}
	_ = nc.SetWriteDeadline(time.Time{})
	return &rawConn{Conn: nc}
}

// readUpgrade reads the server's answer to the upgrade request and fails unless it is 101.
func (rc *rawConn) readUpgrade(t testing.TB) {
	t.Helper()
	rc.br = newBufReader(rc.Conn)
	_ = rc.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		t.Fatalf("raw upgrade response: %v", err)
	}
	_ = rc.SetReadDeadline(time.Time{})
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("raw upgrade: %s", resp.Status)
	}
}

func newBufReader(nc net.Conn) *bufio.Reader { return bufio.NewReader(nc) }

// Opcodes (RFC 6455 §5.2).
const (
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
)

// clientFrame encodes a final, masked client frame. declared, when ≥ 0, replaces the payload
// length in the header (a lie: the test sends fewer bytes than it announces).
func clientFrame(op byte, payload []byte, declared int64) []byte {
	n := int64(len(payload))
	if declared >= 0 {
		n = declared
	}
	b := []byte{0x80 | op}
	switch {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	b = append(b, key[:]...)
	for i, c := range payload {
		b = append(b, c^key[i%4])
	}
	return b
}

// readServerFrame reads one unmasked server frame.
func (rc *rawConn) readServerFrame(deadline time.Time) (op byte, payload []byte, err error) {
	_ = rc.SetReadDeadline(deadline)
	var h [2]byte
	if _, err := io.ReadFull(rc.br, h[:]); err != nil {
		return 0, nil, err
	}
	n := int64(h[1] & 0x7f)
	switch n {
	case 126:
		var e [2]byte
		if _, err := io.ReadFull(rc.br, e[:]); err != nil {
			return 0, nil, err
		}
		n = int64(binary.BigEndian.Uint16(e[:]))
	case 127:
		var e [8]byte
		if _, err := io.ReadFull(rc.br, e[:]); err != nil {
			return 0, nil, err
		}
		n = int64(binary.BigEndian.Uint64(e[:]))
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(rc.br, payload); err != nil {
		return 0, nil, err
	}
	return h[0] & 0x0f, payload, nil
}

// readClose reads frames until a close frame and returns its status code (0: none in it).
func (rc *rawConn) readClose(t testing.TB, within time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		op, p, err := rc.readServerFrame(deadline)
		if err != nil {
			t.Fatalf("no close frame within %v: %v", within, err)
		}
		if op == opClose {
			if len(p) < 2 {
				return 0
			}
			return int(binary.BigEndian.Uint16(p))
		}
	}
}

// readRawFrame reads the next server text frame of rc and decodes it.
func readRawFrame(t *testing.T, rc *rawConn) protocol.Frame {
	t.Helper()
	for {
		op, p, err := rc.readServerFrame(time.Now().Add(10 * time.Second))
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if op != opText {
			continue
		}
		f, err := protocol.Decode(p)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
}

// TestInvalidUTF8Closes1007: a text frame that is not UTF-8 closes the connection with 1007
// (RFC 6455 §8.1). Fails before the reader checked it: the gateway answered bad_request and
// kept the connection.
func TestInvalidUTF8Closes1007(t *testing.T) {
	g := startGateway(t, Options{}, 0)
	rc := rawDial(t, g.url+"?user=utf", true, 0)
	if f := readRawFrame(t, rc); f.Type != protocol.TypeWelcome {
		t.Fatalf("first frame %+v", f)
	}
	if _, err := rc.Write(clientFrame(opText, []byte("{\"type\":\"fib\",\"n\":\"\xff\xfe\"}"), -1)); err != nil {
		t.Fatal(err)
	}
	if code := rc.readClose(t, 5*time.Second); code != int(websocket.StatusInvalidFramePayloadData) {
		t.Fatalf("close code %d, want 1007", code)
	}
	_, _ = rc.Write(clientFrame(opClose, []byte{0x03, 0xef}, -1)) // the close reply (1007)
	testkit.Eventually(t, 5*time.Second, "the disconnect recorded", func() bool { return g.srv.Connections() == 0 })
}

// TestHeaderOverReadLimitCloses1009: a frame header declaring 64 MiB, and no payload after
// it, gets the 1009 close at once. Fails before the frame guard: the library checks its limit
// only while reading a payload, so the connection was held until the ping timeout (45–58 s).
func TestHeaderOverReadLimitCloses1009(t *testing.T) {
	g := startGateway(t, Options{}, 0)
	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		{"64-bit length", clientFrame(opText, nil, 64<<20)},
		{"16-bit length", clientFrame(opBinary, nil, 4097)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := rawDial(t, g.url+"?user=big", true, 0)
			if f := readRawFrame(t, rc); f.Type != protocol.TypeWelcome {
				t.Fatalf("first frame %+v", f)
			}
			start := time.Now()
			if _, err := rc.Write(tc.frame); err != nil {
				t.Fatal(err)
			}
			code := rc.readClose(t, 10*time.Second)
			took := time.Since(start)
			if code != int(websocket.StatusMessageTooBig) {
				t.Fatalf("close code %d, want 1009", code)
			}
			// The contract says at once; the margin is for -race on two loaded cores.
			if took > 2*time.Second {
				t.Fatalf("1009 after %v, want within 1 s", took)
			}
			t.Logf("1009 after %v", took.Round(time.Millisecond))
		})
	}
}

// TestFrameSentWithHandshake: a client frame sent in the same packet as the upgrade request
// is read, not lost. Fails before the hijacked connection kept net/http's buffered bytes
// behind the conn handed to the library (the library reset the reader they were in): the
// request was never answered and the next frame was misread.
func TestFrameSentWithHandshake(t *testing.T) {
	g := startGateway(t, Options{}, 0)
	rc := rawDialSending(t, g.url+"?user=eager", 0, clientFrame(opText, []byte(`{"type":"fib","id":"a","n":10}`), -1))
	rc.readUpgrade(t)
	if f := readRawFrame(t, rc); f.Type != protocol.TypeWelcome {
		t.Fatalf("first frame %+v", f)
	}
	if f := readRawFrame(t, rc); f.Type != protocol.TypeFib || f.ID != "a" || f.Result != "55" {
		t.Fatalf("answer %+v, want fib 10 = 55", f)
	}
}

// TestIdleKeepAliveClosed: an idle keep-alive HTTP connection is closed after the idle
// timeout (60 s by default; shortened here). Fails before http.Server had an IdleTimeout: the
// connection stayed open for good.
func TestIdleKeepAliveClosed(t *testing.T) {
	if httpIdleTimeout != 60*time.Second {
		t.Fatalf("default idle timeout %v, want 60s (docs/PROTOCOL.md)", httpIdleTimeout)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	hs := newHTTPServer(mux, slog.New(slog.DiscardHandler), 300*time.Millisecond)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })

	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := io.WriteString(nc, "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	rc := &rawConn{Conn: nc}
	rc.br = newBufReader(nc)
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, []byte("ok\n")) || resp.Close {
		t.Fatalf("response %s %q (close %v), want a kept-alive 200", resp.Status, body, resp.Close)
	}
	start := time.Now()
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = rc.br.ReadByte()
	if !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection: read %v after %v, want EOF (closed by the server)", err, time.Since(start).Round(time.Millisecond))
	}
	t.Logf("closed after %v idle", time.Since(start).Round(time.Millisecond))
}

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
// disconnect recorded): the reader is started again for each. Without socketClosed wired to
// the socket's Close, the silent client's kick closes a parked socket that nobody reads again:
// it is never cleaned up, and this test times out waiting for it.
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
