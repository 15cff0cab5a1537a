package loadgen

import (
	"fmt"
	"net"
	"net/url"
	"time"
)

// Modes of a run.
const (
	ModeIdle  = "idle"  // open N sockets, hold them, close
	ModeTicks = "ticks" // tick fan-out latency, gaps and duplicates
	ModeFib   = "fib"   // Fibonacci request throughput and round trip
	ModeStorm = "storm" // connect as fast as possible, until open and present in presence
)

// Config describes one run. Zero values mean the documented defaults.
type Config struct {
	URL  string // ws://host:port/ws. Required.
	Mode string // one of the Mode constants. Required.

	N        int           // sockets. Defaults to 1000.
	Inflight int           // handshakes in flight at once. Defaults to 200.
	Rate     float64       // handshakes started per second; 0 means as fast as Inflight allows.
	Hold     time.Duration // idle: how long to hold the sockets open; storm: longest wait for presence. Defaults to 10s.
	Duration time.Duration // ticks, fib: measurement window. Defaults to 10s.
	Grace    time.Duration // after the window: late ticks / outstanding answers. Defaults to 2s.
	Timeout  time.Duration // hard stop of the whole run. Defaults to hold or duration + 2m.

	// Src is the number of source addresses to spread sockets over, starting at SrcBase: one
	// source IP can reach one destination from only ~28k ephemeral ports. 0 means automatic:
	// ceil(N/20000)+1 when the URL's host is a loopback IP, else no binding (the kernel picks).
	// -1 forces no binding.
	Src     int
	SrcBase net.IP // first source address. Defaults to 127.0.0.2.

	User string // user name prefix; socket i connects as User+i. Defaults to "lt".

	FibN        int           // fib: fixed n; used when FibMax is 0. Defaults to 90.
	FibMax      int           // fib: when > 0, n is uniform in [0, FibMax] for each request.
	Pipeline    int           // fib: outstanding requests per socket. Defaults to 1.
	VerifyEvery int           // fib: check 1 in this many results against math/big (fixed n: all). Defaults to 100.
	RetryAfter  time.Duration // fib: pause after a rate_limited or busy answer. Defaults to 50ms.

	RedisURL string // storm: when set, also wait until presence holds every socket.
	Prefix   string // Redis key prefix. Defaults to "ws:".

	PIDs []int // server processes to sample (RSS, CPU).

	ReadLimit int64 // client read limit in bytes. Defaults to 64 MiB (F(10^6) is ~209 kB).

	// Procs > 1 with ChildIndex ≥ 0 makes this run one share of a multi-process run: it opens
	// its share of N on its own block of source addresses and reports phases on Events.
	Procs      int
	ChildIndex int
	// Events, when set, is called at each phase (PhaseOpened, PhaseWindowEnd), so a parent
	// process can sample the servers at the right moments.
	Events func(phase string)
	// Release, when set, makes storm hold its sockets until it is closed (at most Hold): the
	// parent of a -procs storm closes it once presence is full.
	Release <-chan struct{}
}

func (c *Config) defaults() {
	if c.N <= 0 {
		c.N = 1000
	}
	if c.Inflight <= 0 {
		c.Inflight = 200
	}
	if c.Hold <= 0 {
		c.Hold = 10 * time.Second
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Grace <= 0 {
		c.Grace = 2 * time.Second
	}
	if c.Timeout <= 0 {
		c.Timeout = max(c.Hold, c.Duration) + 2*time.Minute
	}
	if c.SrcBase == nil {
		c.SrcBase = net.IPv4(127, 0, 0, 2)
	}
	if c.User == "" {
		c.User = "lt"
	}
	if c.FibN <= 0 && c.FibMax <= 0 {
		c.FibN = 90
	}
	if c.Pipeline <= 0 {
		c.Pipeline = 1
	}
	if c.VerifyEvery <= 0 {
		c.VerifyEvery = 100
	}
	if c.RetryAfter <= 0 {
		c.RetryAfter = 50 * time.Millisecond
	}
	if c.Prefix == "" {
		c.Prefix = "ws:"
	}
	if c.ReadLimit <= 0 {
		c.ReadLimit = 64 << 20
	}
	if c.Procs <= 0 {
		c.Procs = 1
	}
}

func (c *Config) validate() error {
	switch c.Mode {
	case ModeIdle, ModeTicks, ModeFib, ModeStorm:
	default:
		return fmt.Errorf("loadgen: unknown mode %q (idle, ticks, fib, storm)", c.Mode)
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return fmt.Errorf("loadgen: parse url %q: %w", c.URL, err)
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return fmt.Errorf("loadgen: url %q: scheme must be ws or wss", c.URL)
	}
	if c.SrcBase.To4() == nil {
		return fmt.Errorf("loadgen: source base %v is not an IPv4 address", c.SrcBase)
	}
	return nil
}

// srcCount resolves Src's automatic value for n sockets.
func (c *Config) srcCount(n int) int {
	switch {
	case c.Src < 0:
		return 0
	case c.Src > 0:
		return c.Src
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return 0
	}
	if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsLoopback() || ip.To4() == nil {
		return 0
	}
	return (n+19999)/20000 + 1
}

// share returns how many of the N sockets this process opens and the offset of its first
// source address: a child of a -procs run opens its slice of N on addresses no sibling uses.
func (c *Config) share() (n, srcOffset int) {
	if c.Procs <= 1 {
		return c.N, 0
	}
	n = c.N / c.Procs
	if c.ChildIndex < c.N%c.Procs {
		n++
	}
	per := c.srcCount((c.N + c.Procs - 1) / c.Procs)
	return n, c.ChildIndex * per
}

// sourceIPs lists the count addresses from SrcBase + offset on.
func sourceIPs(base net.IP, offset, count int) []net.IP {
	b := base.To4()
	start := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	ips := make([]net.IP, count)
	for i := range ips {
		v := start + uint32(offset+i)
		ips[i] = net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
	return ips
}
