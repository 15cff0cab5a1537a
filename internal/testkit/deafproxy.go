package testkit

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// DeafProxy forwards TCP to a Redis server and can make the subscriber connections deaf: from
// then on what the server sends them is dropped, while commands still go through. go-redis sees
// nothing wrong (its pings are written fine, it just never hears back): the half-dead path of a
// wedged subscription, which the broker's canary exists for. Connections opened later work
// normally.
type DeafProxy struct {
	l     net.Listener
	mu    sync.Mutex
	conns []*proxied
}

type proxied struct {
	pubsub atomic.Bool // the client sent a SUBSCRIBE
	deaf   atomic.Bool
}

// StartDeafProxy listens on a free loopback port and forwards to target until the test ends.
func StartDeafProxy(t testing.TB, target string) *DeafProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &DeafProxy{l: l}
	var wg sync.WaitGroup
	var open []net.Conn
	var openMu sync.Mutex
	track := func(c net.Conn) {
		openMu.Lock()
		open = append(open, c)
		openMu.Unlock()
	}
	t.Cleanup(func() {
		l.Close()
		openMu.Lock()
		for _, c := range open {
			c.Close()
		}
		openMu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			client, err := l.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				client.Close()
				continue
			}
			track(client)
			track(server)
			pc := &proxied{}
			p.mu.Lock()
			p.conns = append(p.conns, pc)
			p.mu.Unlock()
			wg.Go(func() { // client → server
				defer server.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := client.Read(buf)
					if n > 0 {
						if strings.Contains(strings.ToLower(string(buf[:n])), "subscribe") {
							pc.pubsub.Store(true)
						}
						if _, err := server.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			})
			wg.Go(func() { // server → client
				defer client.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := server.Read(buf)
					if n > 0 && !pc.deaf.Load() {
						if _, err := client.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			})
		}
	})
	return p
}

// Addr is the proxy's host:port.
func (p *DeafProxy) Addr() string { return p.l.Addr().String() }

// Deafen makes every current subscriber connection deaf and returns how many there were.
func (p *DeafProxy) Deafen() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.conns {
		if c.pubsub.Load() {
			c.deaf.Store(true)
			n++
		}
	}
	return n
}
