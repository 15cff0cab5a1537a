package gateway

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/protocol"
)

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
