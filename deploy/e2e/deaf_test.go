package e2e

import (
	"bytes"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/wsgw/wsgw/deploy/localcluster"
	"github.com/wsgw/wsgw/internal/testkit"
)

// TestSubscriptionDeaf: a subscription that is up but hears nothing, made genuinely: the
// gateway reaches Redis through a TCP proxy that, on demand, keeps the subscriber's connection
// open but drops everything Redis sends on it (a half-dead path, which go-redis's health check
// does not notice: its pings are written fine). The ticker goes on publishing and moving
// ws:ticker:last, so the gateway's own canary must catch it without anyone polling /readyz: a
// new subscription and ticks at the client again.
func TestSubscriptionDeaf(t *testing.T) {
	binDir(t) // skips under -short before Redis is started
	srv := testkit.StartRedis(t)
	px := startProxy(t, srv.Addr())
	c := startCluster(t, localcluster.Options{Gateways: 1, Tickers: 1, NoLB: true, RedisURL: "redis://" + px.addr + "/0"})
	g := c.Gateways[0]
	cl := dial(t, g.Addr, "deaf")
	cl.waitTicks(10*time.Second, 2)

	if n := px.deafen(); n != 1 {
		t.Fatalf("%d subscriber connections through the proxy, want 1", n)
	}
	deafened := time.Now()
	before := cl.lastSeq()
	// Nobody asks /readyz: the gateway's own canary (every 2 s) must notice within a few
	// seconds and resubscribe, and ticks reach the client again.
	f := cl.waitTick(15*time.Second, max(before, seqNow()))
	recovered := f.At
	t.Logf("deaf subscription, /readyz never polled: ticks back after %v (seq %d → %d)",
		recovered.Sub(deafened).Round(time.Millisecond), before, f.Seq)
	if !logHas(t, g.LogPath(), "subscription wedged") {
		t.Errorf("the gateway log does not mention the wedged subscription")
	}
	if code := httpStatus(g.Addr, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz %d after the recovery, want 200", code)
	}
	cl.waitTick(5*time.Second, f.Seq+1)
	checkTicks(t, cl, func(prev, next frame) bool { return !prev.At.After(recovered) && next.At.After(deafened) })
}

// proxy forwards TCP connections to a Redis server; deafen makes the connections that have
// sent SUBSCRIBE so far drop every byte Redis sends them, while staying open.
type proxy struct {
	addr string
	ln   net.Listener

	mu    sync.Mutex
	conns []*proxyConn
	wg    sync.WaitGroup
}

type proxyConn struct {
	client, server net.Conn
	mu             sync.Mutex
	subscriber     bool
	deaf           bool
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: ln.Addr().String(), ln: ln}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			pc := &proxyConn{client: c, server: s}
			p.mu.Lock()
			p.conns = append(p.conns, pc)
			p.mu.Unlock()
			p.wg.Add(2)
			go func() { defer p.wg.Done(); pc.up() }()
			go func() { defer p.wg.Done(); pc.down() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, pc := range p.conns {
			pc.client.Close()
			pc.server.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

// deafen returns how many subscriber connections it made deaf.
func (p *proxy) deafen() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, pc := range p.conns {
		pc.mu.Lock()
		if pc.subscriber {
			pc.deaf = true
			n++
		}
		pc.mu.Unlock()
	}
	return n
}

// up copies client → server, noting a SUBSCRIBE.
func (pc *proxyConn) up() {
	defer pc.server.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := pc.client.Read(buf)
		if n > 0 {
			if bytes.Contains(bytes.ToLower(buf[:n]), []byte("subscribe")) {
				pc.mu.Lock()
				pc.subscriber = true
				pc.mu.Unlock()
			}
			if _, werr := pc.server.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// down copies server → client until deaf, then discards.
func (pc *proxyConn) down() {
	defer pc.client.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := pc.server.Read(buf)
		if n > 0 {
			pc.mu.Lock()
			deaf := pc.deaf
			pc.mu.Unlock()
			if !deaf {
				if _, werr := pc.client.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}
