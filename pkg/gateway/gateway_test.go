package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/protocol"
)

func TestWelcome(t *testing.T) {
	g := startGateway(t, Options{ID: "gw-7f3a", MaxN: 500}, 0)
	_, w := g.dial(t, "alice")
	if w.User != "alice" || w.Gateway != "gw-7f3a" || w.MaxN != 500 || !strings.HasPrefix(w.ConnID, "c-") {
		t.Fatalf("welcome = %+v", w)
	}
	_, w = g.dial(t, "")
	if len(w.User) != len("guest-")+6 || !strings.HasPrefix(w.User, "guest-") || strings.ToLower(w.User) != w.User {
		t.Fatalf("guest name = %q, want guest- plus 6 lowercase hex digits", w.User)
	}
}

// TestTickCadence uses the real 1 s interval: ticks arrive once a second, aligned to the
// second, seq = Unix second, time in RFC 3339 UTC with milliseconds.
func TestTickCadence(t *testing.T) {
	g := startGateway(t, Options{}, time.Second)
	c, _ := g.dial(t, "ana")
	var prev int64
	for i := 0; i < 3; i++ {
		f := readFrame(t, c)
		got := time.Now()
		if f.Type != protocol.TypeTime {
			t.Fatalf("frame %d = %+v, want time", i, f)
		}
		want := time.Unix(f.Seq, 0).UTC().Format("2006-01-02T15:04:05.000Z")
		if f.Time != want {
			t.Fatalf("time %q does not match seq %d (%q)", f.Time, f.Seq, want)
		}
		if lag := got.Sub(time.Unix(f.Seq, 0)); lag < 0 || lag > 300*time.Millisecond {
			t.Fatalf("tick %d arrived %v after its instant; want aligned to the second", f.Seq, lag)
		}
		if prev != 0 && f.Seq != prev+1 {
			t.Fatalf("seq went %d → %d, want +1", prev, f.Seq)
		}
		prev = f.Seq
	}
}

func TestFibonacci(t *testing.T) {
	const maxN = 100000
	g := startGateway(t, Options{MaxN: maxN}, 0)
	c, _ := g.dial(t, "ana")
	for _, n := range []int{0, 1, 2, 10, 93, 94, 1000, maxN} {
		id := "r" + big.NewInt(int64(n)).String()
		b, _ := json.Marshal(map[string]any{"type": "fib", "n": n, "id": id})
		write(t, c, string(b))
		f := readReply(t, c)
		if f.Type != protocol.TypeFib || f.ID != id || f.N != n {
			t.Fatalf("F(%d): got %+v", n, f)
		}
		if want := testkit.Fib(n).String(); f.Result != want {
			t.Fatalf("F(%d) = %.40s…, want %.40s…", n, f.Result, want)
		}
	}
	for _, s := range []string{"10", "fib 10", " fib 10 "} {
		write(t, c, s)
		if f := readReply(t, c); f.Type != protocol.TypeFib || f.Result != "55" || f.ID != "" {
			t.Fatalf("%q: got %+v", s, f)
		}
	}
}

func TestErrorFrames(t *testing.T) {
	g := startGateway(t, Options{MaxN: 1000}, 0)
	c, _ := g.dial(t, "ana")
	cases := []struct{ send, code, id string }{
		{`{"type":"fib","n":10.5,"id":"a"}`, protocol.CodeInvalidN, "a"},
		{`{"type":"fib","n":-1,"id":"b"}`, protocol.CodeInvalidN, "b"},
		{`{"type":"fib","n":"10","id":"c"}`, protocol.CodeInvalidN, "c"},
		{`{"type":"fib","n":1e400,"id":"d"}`, protocol.CodeInvalidN, "d"},
		{`{"type":"fib","n":1001,"id":"e"}`, protocol.CodeInvalidN, "e"},
		{`{"type":"fib","id":"f"}`, protocol.CodeInvalidN, "f"},
		{`fib x`, protocol.CodeInvalidN, ""},
		{`10.5`, protocol.CodeInvalidN, ""},
		{`-1`, protocol.CodeInvalidN, ""},
		{`not json`, protocol.CodeBadRequest, ""},
		{`{"type":"nope","id":"g"}`, protocol.CodeBadRequest, "g"},
		{`{"type":"fib","n":1,"id":7}`, protocol.CodeBadRequest, ""},
		{`{"type":"fib","n":1,"id":"` + strings.Repeat("x", 65) + `"}`, protocol.CodeBadRequest, ""},
		{`{`, protocol.CodeBadRequest, ""},
	}
	for _, tc := range cases {
		write(t, c, tc.send)
		f := readReply(t, c)
		if f.Type != protocol.TypeError || f.Code != tc.code || f.ID != tc.id || f.Message == "" {
			t.Fatalf("%q: got %+v, want error %s id %q", tc.send, f, tc.code, tc.id)
		}
	}
	// Empty and binary frames.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, typ := range []websocket.MessageType{websocket.MessageText, websocket.MessageBinary} {
		data := []byte{}
		if typ == websocket.MessageBinary {
			data = []byte("10")
		}
		if err := c.Write(ctx, typ, data); err != nil {
			t.Fatal(err)
		}
		if f := readReply(t, c); f.Code != protocol.CodeBadRequest {
			t.Fatalf("%v frame %q: got %+v, want bad_request", typ, data, f)
		}
	}
	// The connection lives on.
	write(t, c, "12")
	if f := readReply(t, c); f.Result != "144" {
		t.Fatalf("after errors: got %+v", f)
	}
}

func TestReadLimitCloses1009(t *testing.T) {
	g := startGateway(t, Options{ReadLimit: 4096}, 0)
	c, _ := g.dial(t, "ana")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The gateway closes with 1009 at the frame's header, before its payload: the rest of the
	// write may meet a reset, and then the client never reads the close frame.
	werr := c.Write(ctx, websocket.MessageText, []byte(`{"type":"fib","n":1,"id":"`+strings.Repeat("x", 5000)+`"}`))
	for {
		_, _, err := c.Read(ctx)
		if err != nil {
			if s := websocket.CloseStatus(err); s != websocket.StatusMessageTooBig && werr == nil {
				t.Fatalf("close status = %v (%v), want 1009", s, err)
			}
			break
		}
	}
	testkit.Eventually(t, 5*time.Second, "disconnect counted as too_big", func() bool {
		return testutil.ToFloat64(g.m.Disconnects.WithLabelValues(reasonTooBig)) == 1
	})
}

func TestInvalidUser400(t *testing.T) {
	g := startGateway(t, Options{}, 0)
	for _, user := range []string{"a b", "<script>", strings.Repeat("a", 65), "x/y"} {
		resp, err := http.Get(g.http.URL + "/ws?user=" + url.QueryEscape(user))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || strings.Count(strings.TrimSpace(string(body)), "\n") != 0 || len(body) < 5 {
			t.Fatalf("user %q: %d %q, want 400 with a one-line reason", user, resp.StatusCode, body)
		}
	}
}

func TestOrigin(t *testing.T) {
	g := startGateway(t, Options{AllowedOrigins: []string{"*.trusted.example"}}, 0)
	checkOrigins(t, g, http.Header{})
}

// checkOrigins dials g from each origin of the ALLOWED_ORIGINS=*.trusted.example table with the
// given headers (a token, with authentication on) and checks the status.
func checkOrigins(t *testing.T, g *testGateway, base http.Header) {
	t.Helper()
	host := strings.TrimPrefix(g.http.URL, "http://")
	try := func(origin string) int {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h := base.Clone()
		if origin != "" {
			h.Set("Origin", origin)
		}
		c, resp, err := websocket.Dial(ctx, g.url, &websocket.DialOptions{HTTPHeader: h})
		if err == nil {
			c.CloseNow()
			return http.StatusSwitchingProtocols
		}
		if resp == nil {
			t.Fatalf("origin %q: %v", origin, err)
		}
		return resp.StatusCode
	}
	for origin, want := range map[string]int{
		"":                            101,
		"http://" + host:              101,
		"https://app.trusted.example": 101,
		"https://trusted.example":     403,
		"https://evil.example":        403,
		"null":                        403,
	} {
		if got := try(origin); got != want {
			t.Errorf("Origin %q: status %d, want %d", origin, got, want)
		}
	}
}

func TestUsersEndpoint(t *testing.T) {
	g := startGateway(t, Options{ID: "gw-u"}, 0)
	_, w1 := g.dial(t, "alice")
	c2, _ := g.dial(t, "bob")
	users := getUsers(t, g.http.URL)
	if users.Count != 2 || len(users.Users) != 2 {
		t.Fatalf("users = %+v", users)
	}
	var alice protocol.User
	for _, u := range users.Users {
		if u.User == "alice" {
			alice = u
		}
	}
	if alice.ConnID != w1.ConnID || alice.Gateway != "gw-u" || alice.ConnectedAt.IsZero() {
		t.Fatalf("alice = %+v in %+v", alice, users)
	}
	c2.Close(websocket.StatusNormalClosure, "")
	testkit.Eventually(t, 5*time.Second, "bob removed", func() bool { return getUsers(t, g.http.URL).Count == 1 })
}

// getUsers GETs base/users and decodes it.
func getUsers(t testing.TB, base string) protocol.Users {
	t.Helper()
	resp, err := http.Get(base + "/users")
	if err != nil {
		t.Fatalf("GET /users: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /users: %s", resp.Status)
	}
	var u protocol.Users
	if err := json.NewDecoder(resp.Body).Decode(&u); err != nil {
		t.Fatalf("GET /users: decode: %v", err)
	}
	return u
}

func TestHTTPEndpoints(t *testing.T) {
	g := startGateway(t, Options{}, 0)
	g.dial(t, "ana")
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/readyz":  "ready",
		"/metrics": "ws_connections_open 1",
		"/":        "<html",
	} {
		resp, err := http.Get(g.http.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(strings.ToLower(string(body)), want) {
			t.Errorf("GET %s: %d, body does not contain %q", path, resp.StatusCode, want)
		}
	}
	g.srv.draining.Store(true)
	resp, err := http.Get(g.http.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while draining = %d, want 503", resp.StatusCode)
	}
}

func TestDrainCloses1001WithRetry(t *testing.T) {
	g := startGateway(t, Options{MaxRetryDelay: 5 * time.Second}, 50*time.Millisecond)
	const n = 20
	conns := make([]*websocket.Conn, n)
	for i := range conns {
		conns[i], _ = g.dial(t, "ana")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go g.srv.Drain(ctx)
	seen := map[time.Duration]bool{}
	for _, c := range conns {
		var err error
		for err == nil {
			_, _, err = c.Read(ctx)
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.StatusGoingAway {
			t.Fatalf("close = %v, want 1001", err)
		}
		d, ok := protocol.ParseRetry(ce.Reason)
		if !ok || d < 0 || d > 5*time.Second {
			t.Fatalf("reason %q, want {\"retry_ms\":0..5000}", ce.Reason)
		}
		seen[d] = true
	}
	if len(seen) < n/2 {
		t.Fatalf("retry_ms not jittered: %d distinct values for %d connections", len(seen), n)
	}
	testkit.Eventually(t, 5*time.Second, "presence empty after drain", func() bool { return getUsers(t, g.http.URL).Count == 0 })
}

func TestRateLimit(t *testing.T) {
	g := startGateway(t, Options{Rate: 1, Burst: 3, RateLimitGrace: 700 * time.Millisecond}, 0)
	c, _ := g.dial(t, "ana")
	for i := 0; i < 3; i++ {
		write(t, c, "5")
		if f := readReply(t, c); f.Result != "5" {
			t.Fatalf("within burst: %+v", f)
		}
	}
	write(t, c, `{"type":"fib","n":5,"id":"over"}`)
	if f := readReply(t, c); f.Code != protocol.CodeRateLimited || f.ID != "over" {
		t.Fatalf("over the limit: %+v, want rate_limited with id", f)
	}
	// Keep pushing past the grace: 1008.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			if c.Write(ctx, websocket.MessageText, []byte("5")) != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	var err error
	for err == nil {
		_, _, err = c.Read(ctx)
	}
	if s := websocket.CloseStatus(err); s != websocket.StatusPolicyViolation {
		t.Fatalf("close = %v, want 1008", err)
	}
}

// TestPingTimeout: a peer that never answers pings (it never reads, so its pongs are never
// sent) is closed.
func TestPingTimeout(t *testing.T) {
	g := startGateway(t, Options{PingInterval: 100 * time.Millisecond, PingTimeout: 200 * time.Millisecond}, 0)
	g.dial(t, "deaf") // never read again
	testkit.Eventually(t, 10*time.Second, "ping timeout", func() bool {
		return testutil.ToFloat64(g.m.Disconnects.WithLabelValues(reasonPingTimeout)) == 1
	})
	// A reading peer answers pings and stays.
	c, _ := g.dial(t, "alive")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for {
			if _, _, err := c.Read(ctx); err != nil {
				return
			}
		}
	}()
	time.Sleep(800 * time.Millisecond)
	if n := g.srv.Connections(); n != 1 {
		t.Fatalf("connections = %d, want the reading peer alive", n)
	}
}

// TestPingTimedOut classifies the errors coder/websocket's Ping really returns: no pong in
// time is a ping timeout; a connection the client closed while the ping waited is not.
func TestPingTimedOut(t *testing.T) {
	accepted := make(chan *websocket.Conn, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		accepted <- c
		_, _, _ = c.Read(context.Background()) // the close handshake needs a reader
	}))
	defer hs.Close()
	url := "ws" + strings.TrimPrefix(hs.URL, "http")
	ctx := context.Background()

	// The client never reads, so it never answers the ping.
	cl, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.CloseNow()
	srv := <-accepted
	pctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	err = srv.Ping(pctx)
	cancel()
	if !pingTimedOut(err) {
		t.Errorf("no pong in time: pingTimedOut(%v) = false", err)
	}

	// The client closes while a ping waits for its pong.
	cl2, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv2 := <-accepted
	pinged := make(chan error, 1)
	go func() { pinged <- srv2.Ping(ctx) }()
	time.Sleep(50 * time.Millisecond) // the ping is out and waiting
	_ = cl2.Close(websocket.StatusNormalClosure, "bye")
	select {
	case err := <-pinged:
		if pingTimedOut(err) {
			t.Errorf("closed by the client: pingTimedOut(%v) = true", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Ping still waiting 5 s after the client closed")
	}
	if pingTimedOut(nil) {
		t.Error("pingTimedOut(nil) = true")
	}
}

// TestReadersUnderChurn: 40 clients talk in bursts with pauses longer than IdleRead (so every
// reader parks and is woken again many times), while pings run, then leave by close frame or
// by dropping the TCP connection. Under -race this checks the hand-over of the reader role
// (serve → poller → reader → poller …, and socketClosed): every answer right, every
// connection ended once, none left behind.
func TestReadersUnderChurn(t *testing.T) {
	g := startGateway(t, Options{IdleRead: time.Millisecond, PingInterval: 20 * time.Millisecond, Rate: 1000, Burst: 1000}, 0)
	const clients, rounds = 40, 40
	errs := make(chan error, clients)
	for i := range clients {
		go func() {
			errs <- func() error {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				c, _, err := websocket.Dial(ctx, g.url+"?user=churn", nil)
				if err != nil {
					return err
				}
				defer c.CloseNow()
				if _, _, err := c.Read(ctx); err != nil { // the welcome
					return err
				}
				for r := range rounds {
					time.Sleep(time.Duration(2+(i+r)%9) * time.Millisecond)
					n := (i*rounds + r) % 90
					req := `{"type":"fib","id":"q","n":` + strconv.Itoa(n) + `}`
					if err := c.Write(ctx, websocket.MessageText, []byte(req)); err != nil {
						return err
					}
					for { // skip ticks; the library answers the server's pings while reading
						_, b, err := c.Read(ctx)
						if err != nil {
							return err
						}
						var f protocol.Frame
						if err := json.Unmarshal(b, &f); err != nil {
							return err
						}
						if f.Type == protocol.TypeTime {
							continue
						}
						if want := testkit.Fib(n).String(); f.Type != protocol.TypeFib || f.Result != want {
							return errors.New("fib " + strconv.Itoa(n) + ": got " + string(b) + ", want " + want)
						}
						break
					}
				}
				if i%2 == 0 {
					return c.Close(websocket.StatusNormalClosure, "")
				}
				return nil // CloseNow: the TCP connection just drops
			}()
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 10*time.Second, "every connection ended", func() bool { return g.srv.Connections() == 0 })
	ended := 0.0
	for _, why := range []string{reasonClosed, reasonError, reasonPingTimeout} {
		ended += testutil.ToFloat64(g.m.Disconnects.WithLabelValues(why))
	}
	if ended != clients {
		t.Fatalf("%v disconnects recorded, want %d (one per connection)", ended, clients)
	}
	if n := testutil.ToFloat64(g.m.Disconnects.WithLabelValues(reasonPingTimeout)); n != 0 {
		t.Fatalf("%v ping timeouts among clients that answer pings", n)
	}
}
