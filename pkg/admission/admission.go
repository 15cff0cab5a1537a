// Package admission decides whether a WebSocket upgrade may proceed, as docs/PROTOCOL.md's
// "Admission" defines it: at most MaxConnections sockets per gateway, at most MaxPerIP per
// client address, the client's address taken from X-Forwarded-For only when the TCP peer is a
// trusted proxy. It also watches the listener's accept errors (see Listener), since a gateway
// that runs out of file descriptors cannot even answer its health check.
//
// Entry points: New with Options, Controller.Reserve, Ticket.Release, Controller.Full, Refuse,
// Listener.
package admission

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// Refusal reasons: the label of ws_rejected_total.
const (
	ReasonFull  = "full"   // the gateway holds MaxConnections sockets
	ReasonPerIP = "per_ip" // the client's address holds MaxPerIP sockets
)

// FDReserve is how many open files the default MaxConnections leaves for everything that is
// not a WebSocket: health checks, /metrics, admin endpoints, Redis, refused requests.
const FDReserve = 1024

// Options configure a Controller. Zero values mean the documented defaults.
type Options struct {
	// MaxConnections is the most sockets the gateway holds at once. Defaults to
	// DefaultMaxConnections(): the open-file soft limit minus FDReserve.
	MaxConnections int
	// MaxPerIP is the most sockets one client address holds at once. 0 (the default) means
	// no per-address limit.
	MaxPerIP int
	// TrustedProxies are the networks whose X-Forwarded-For is believed (the load
	// balancer's). Empty (the default): the client's address is always the TCP peer.
	TrustedProxies []netip.Prefix
}

// DefaultMaxConnections is the open-file soft limit of this process, read now, minus
// FDReserve, so /healthz, /readyz and the admin endpoints still get a descriptor when the
// gateway is full. Under a soft limit below 2×FDReserve it keeps half the limit instead
// (a limit of 300 gives 150), since minus 1024 would leave nothing. Go raises the soft limit
// to the hard one at start, so this is normally the hard limit minus 1024.
func DefaultMaxConnections() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == 0 {
		return 1 << 20 // no limit known: admission by count alone cannot protect anything
	}
	soft := int(min(rl.Cur, 1<<30))
	return max(soft-FDReserve, soft/2, 1)
}

// Controller counts the sockets admitted, in total and per client address.
//
// Concurrency: every method is safe for concurrent use. Reserve and Release take one mutex
// (they run once per connection, never per frame); Full and Count read an atomic and never
// block, so a readiness probe cannot wait behind a flood of upgrades.
type Controller struct {
	max     int
	perIP   int
	trusted []netip.Prefix

	total atomic.Int64 // written under mu, read anywhere

	mu   sync.Mutex
	byIP map[netip.Addr]int // only with perIP > 0; an address is deleted when its count reaches 0
}

// New builds a Controller, resolving the defaults of o (the open-file limit is read now).
func New(o Options) *Controller {
	if o.MaxConnections <= 0 {
		o.MaxConnections = DefaultMaxConnections()
	}
	c := &Controller{max: o.MaxConnections, perIP: max(o.MaxPerIP, 0), trusted: o.TrustedProxies}
	if c.perIP > 0 {
		c.byIP = make(map[netip.Addr]int)
	}
	return c
}

// Max is the resolved MaxConnections.
func (c *Controller) Max() int { return c.max }

// Count is the number of sockets reserved and not yet released.
func (c *Controller) Count() int { return int(c.total.Load()) }

// Full reports whether the gateway holds MaxConnections sockets: /readyz answers 503 then, so
// the load balancer sends new clients to another replica.
func (c *Controller) Full() bool { return c.total.Load() >= int64(c.max) }

// Refused is Reserve's error: why the upgrade may not proceed.
type Refused struct {
	Reason string // ReasonFull or ReasonPerIP
	msg    string
}

func (e *Refused) Error() string { return e.msg }

// Ticket is one reserved socket. Release it exactly when the socket is gone: after the
// connection ended, or when the upgrade failed. Release is idempotent, so a deferred Release
// beside an explicit one never frees a slot twice.
type Ticket struct {
	c        *Controller
	addr     netip.Addr // valid only when the per-address limit is on
	released atomic.Bool
}

// Reserve counts one more socket for r's client, or returns a *Refused when the gateway or
// the client's address is at its limit. Call it before the upgrade; nothing is counted on
// refusal.
func (c *Controller) Reserve(r *http.Request) (*Ticket, error) {
	t := &Ticket{c: c}
	if c.perIP > 0 {
		t.addr = c.ClientAddr(r)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.total.Load(); n >= int64(c.max) {
		return nil, &Refused{Reason: ReasonFull, msg: fmt.Sprintf("gateway full (%d connections); retry, another replica will take you", n)}
	}
	if c.perIP > 0 {
		if n := c.byIP[t.addr]; n >= c.perIP {
			return nil, &Refused{Reason: ReasonPerIP, msg: fmt.Sprintf("too many connections from %s (limit %d)", t.addr, c.perIP)}
		}
		c.byIP[t.addr]++
	}
	c.total.Add(1)
	return t, nil
}

// Release frees the ticket's slot; later calls do nothing. A nil ticket is a no-op too.
func (t *Ticket) Release() {
	if t == nil || !t.released.CompareAndSwap(false, true) {
		return
	}
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total.Add(-1)
	if c.perIP > 0 {
		if n := c.byIP[t.addr]; n <= 1 {
			delete(c.byIP, t.addr)
		} else {
			c.byIP[t.addr] = n - 1
		}
	}
}

// ClientAddr is the address r's client is counted under: the TCP peer, or, when the peer is
// in TrustedProxies, the last X-Forwarded-For address that is not (walking from the right, the
// entries the trusted proxies appended). When every entry is trusted it is the leftmost; when
// an entry is not an address (a proxy that appends garbage is misconfigured), it is the peer.
func (c *Controller) ClientAddr(r *http.Request) netip.Addr {
	peer := parseAddr(r.RemoteAddr)
	if !c.isTrusted(peer) {
		return peer
	}
	addr := peer
	hops := r.Header.Values("X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a := parseAddr(strings.TrimSpace(parts[j]))
			if !a.IsValid() {
				return peer
			}
			addr = a
			if !c.isTrusted(a) {
				return a
			}
		}
	}
	return addr
}

func (c *Controller) isTrusted(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range c.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// parseAddr reads "1.2.3.4", "1.2.3.4:5", "::1" or "[::1]:5"; IPv4-mapped IPv6 becomes IPv4.
// It returns the zero Addr when s is none of these.
func parseAddr(s string) netip.Addr {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone("")
	}
	if host, _, err := net.SplitHostPort(s); err == nil {
		if a, err := netip.ParseAddr(host); err == nil {
			return a.Unmap().WithZone("")
		}
	}
	return netip.Addr{}
}

// Refuse answers a refused upgrade: 503 with Retry-After: 1 and the reason on one line, and
// closes the connection afterwards, so a flood of refused clients holds no descriptors.
func Refuse(w http.ResponseWriter, err error) {
	w.Header().Set("Retry-After", "1")
	w.Header().Set("Connection", "close")
	http.Error(w, strings.ReplaceAll(err.Error(), "\n", " "), http.StatusServiceUnavailable)
}
