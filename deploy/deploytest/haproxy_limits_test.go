package deploytest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wsgw/wsgw/deploy/lbconfig"
	"github.com/wsgw/wsgw/internal/testkit"
)

// from returns dial options whose connections leave from src (any 127.0.0.0/8 address is
// loopback on Linux, so one host can play several clients).
func from(src string) *websocket.DialOptions {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	return &websocket.DialOptions{HTTPClient: &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}}
}

// dialWS opens a WebSocket through HAProxy from src; the caller closes it.
func dialWS(bind, src string) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+bind+"/ws", from(src))
	return c, err
}

// TestHAProxyPerSourceConns: with the stick table limiting a source to 3 connections, a 4th from
// the same address is refused while another address still gets in, and a closed one frees a slot.
// Fails before the stick table was added to the template: the 4th connection gets through.
func TestHAProxyPerSourceConns(t *testing.T) {
	bind := startLimited(t, 3, 1000)

	var held []*websocket.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.CloseNow()
		}
	})
	for i := range 3 {
		c, err := dialWS(bind, "127.0.0.2")
		if err != nil {
			t.Fatalf("connection %d of 3 from 127.0.0.2: %v", i+1, err)
		}
		held = append(held, c)
	}
	if c, err := dialWS(bind, "127.0.0.2"); err == nil {
		c.CloseNow()
		t.Fatal("a 4th connection from 127.0.0.2 got through a limit of 3")
	}
	c, err := dialWS(bind, "127.0.0.3")
	if err != nil {
		t.Fatalf("127.0.0.3 refused while only 127.0.0.2 is over its limit: %v", err)
	}
	held = append(held, c)

	held[0].Close(websocket.StatusNormalClosure, "")
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := dialWS(bind, "127.0.0.2")
		if err == nil {
			held = append(held, c)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("127.0.0.2 still refused 5 s after closing one of its 3: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestHAProxyPerSourceRate: with at most 5 new connections per 10 s per source, the 6th short
// request from one address within the window is refused, another address is not.
// Fails before the stick table was added to the template: the 6th request gets through.
func TestHAProxyPerSourceRate(t *testing.T) {
	bind := startLimited(t, 1000, 5) // from 127.0.0.1: not counted against the sources below

	get := func(src string) error {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
		hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
		resp, err := hc.Get("http://" + bind + "/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /: %s", resp.Status)
		}
		return nil
	}
	for i := range 5 {
		if err := get("127.0.0.4"); err != nil {
			t.Fatalf("request %d of 5 from 127.0.0.4: %v", i+1, err)
		}
	}
	if err := get("127.0.0.4"); err == nil {
		t.Fatal("a 6th new connection from 127.0.0.4 within 10 s got through a rate of 5")
	}
	if err := get("127.0.0.5"); err != nil {
		t.Fatalf("127.0.0.5 refused while only 127.0.0.4 is over its rate: %v", err)
	}
}

// startLimited starts HAProxy in front of one stand-in gateway with the given per-source limits
// and returns its address once it answers (from 127.0.0.1).
func startLimited(t *testing.T, conns, rate int) string {
	t.Helper()
	bin := testkit.Need(t, "haproxy")
	a := newBackend(t, "a")
	bind := freeAddr(t)
	startHAProxy(t, bin, lbconfig.Config{
		Servers: []string{a.srv.Listener.Addr().String()}, Bind: bind, MaxConn: 1000,
		PerSourceConns: conns, PerSourceRate: rate,
	})
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := hc.Get("http://" + bind + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return bind
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy on %s not answering: %v", bind, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
