package termclient

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// fakeGateway speaks the contract of PROTOCOL.md well enough for the client: welcome, a tick
// right away and then every tick interval, answers to requests, and a per-connection script to
// close or drop connections. Frames are built with pkg/protocol, as the real gateway's are.
type fakeGateway struct {
	t        *testing.T
	srv      *httptest.Server
	tick     time.Duration
	results  map[int]string                            // answers overriding the computed F(n)
	delay    time.Duration                             // before each answer
	script   func(i int, c *websocket.Conn) (end bool) // run after the welcome of connection i
	accepted chan accept

	mu      sync.Mutex
	n       int
	closeAt []time.Time // when the script of connection i closed it
	closes  []websocket.StatusCode
}

type accept struct {
	at   time.Time
	user string
}

func newFakeGateway(t *testing.T, configure func(*fakeGateway)) *fakeGateway {
	t.Helper()
	g := &fakeGateway{t: t, tick: 50 * time.Millisecond, accepted: make(chan accept, 16)}
	if configure != nil {
		configure(g)
	}
	g.srv = httptest.NewServer(http.HandlerFunc(g.serveWS))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *fakeGateway) url() string { return "ws" + strings.TrimPrefix(g.srv.URL, "http") + "/ws" }

func (g *fakeGateway) serveWS(w http.ResponseWriter, r *http.Request) {
	user := r.URL.Query().Get("user")
	if user == "" {
		user = protocol.GuestPrefix + "a1b2c3"
	} else if err := protocol.ValidateUser(user); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		g.t.Errorf("fake gateway: accept: %v", err)
		return
	}
	defer c.CloseNow()
	g.mu.Lock()
	i := g.n
	g.n++
	g.mu.Unlock()
	g.accepted <- accept{at: time.Now(), user: r.URL.Query().Get("user")}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	write := func(b []byte) error {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return c.Write(wctx, websocket.MessageText, b)
	}
	if write(protocol.EncodeWelcome(fmt.Sprintf("c-%d", i), user, "gw-test", protocol.DefaultMaxN, 0)) != nil {
		return
	}
	seq := protocol.TickSeq(time.Now(), g.tick)
	if write(protocol.TimeFrame(seq, g.tick)) != nil { // before any answer, so every run sees one
		return
	}
	go func() {
		tk := time.NewTicker(g.tick)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				seq++
				if write(protocol.TimeFrame(seq, g.tick)) != nil {
					return
				}
			}
		}
	}()
	if g.script != nil {
		go func() {
			if g.script(i, c) {
				cancel()
			}
		}()
	}
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			g.mu.Lock()
			g.closes = append(g.closes, websocket.CloseStatus(err))
			g.mu.Unlock()
			return
		}
		req, perr := protocol.ParseRequest(data, typ == websocket.MessageBinary, protocol.DefaultMaxN)
		if perr != nil {
			_ = write(protocol.EncodeError(perr.ID, perr.Code, perr.Message))
			continue
		}
		time.Sleep(g.delay)
		res, ok := g.results[req.N]
		if !ok {
			res = testkit.Fib(req.N).String()
		}
		_ = write(protocol.EncodeFib(req.ID, req.N, res))
	}
}

// markClose records that the script is about to close connection i.
func (g *fakeGateway) markClose() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closeAt = append(g.closeAt, time.Now())
}

func (g *fakeGateway) firstClose() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closeAt[0]
}

// clientCloses are the close codes the gateway read from clients that ended their connection.
func (g *fakeGateway) clientCloses() []websocket.StatusCode {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]websocket.StatusCode(nil), g.closes...)
}

func (g *fakeGateway) nextAccept(t *testing.T, within time.Duration) accept {
	t.Helper()
	select {
	case a := <-g.accepted:
		return a
	case <-time.After(within):
		t.Fatalf("no connection within %s", within)
		return accept{}
	}
}

// running is one Run in a goroutine, with its streams.
type running struct {
	stdin          *io.PipeWriter
	stdout, stderr *testkit.SyncBuffer
	done           chan error
	cancel         context.CancelFunc
}

// start runs the client with args and a piped stdin that the test writes and closes.
func start(t *testing.T, args ...string) *running {
	t.Helper()
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{stdin: pw, stdout: &testkit.SyncBuffer{}, stderr: &testkit.SyncBuffer{}, done: make(chan error, 1), cancel: cancel}
	go func() { r.done <- Run(ctx, args, pr, r.stdout, r.stderr) }()
	t.Cleanup(func() {
		cancel()
		pw.Close()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
	})
	return r
}

func (r *running) typeLine(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(r.stdin, line+"\n"); err != nil {
		t.Fatalf("write stdin: %v", err)
	}
}

// wait returns Run's result, failing the test when it takes longer than within.
func (r *running) wait(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // let Cleanup see it too
		return err
	case <-time.After(within):
		t.Fatalf("Run did not return within %s; stdout:\n%s\nstderr:\n%s", within, r.stdout, r.stderr)
		return nil
	}
}

// waitFor polls cond; on timeout it fails, adding what the optional detail functions say.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool, detail ...func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			var extra []string
			for _, d := range detail {
				extra = append(extra, d())
			}
			t.Fatalf("timed out after %s waiting for %s\n%s", within, what, strings.Join(extra, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
