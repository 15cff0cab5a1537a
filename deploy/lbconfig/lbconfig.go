// Package lbconfig renders the HAProxy configuration that fronts the gateways, from one template
// for both deployments, so the compose stack and the local cluster balance, health-check and
// time out connections the same way.
//
// Entry points: [Render] and [Config]. The template is haproxy.cfg.tmpl, embedded;
// deploy/haproxy/haproxy.cfg is its Docker rendering, kept in sync by deploy/deploytest's golden test.
package lbconfig

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"text/template"
)

//go:embed haproxy.cfg.tmpl
var templateText string

// tmpl is templateText parsed once; [Render] executes it.
var tmpl = template.Must(template.New("haproxy.cfg").
	Funcs(template.FuncMap{"inc": func(i int) int { return i + 1 }}).
	Option("missingkey=error").
	Parse(templateText))

// DefaultBind is the listen address used when [Config.Bind] is empty: the gateway's own default
// port, so clients need not know whether a load balancer is in front.
const DefaultBind = ":8080"

// DefaultMaxConn is the connection limit used when [Config.MaxConn] is zero: room for 50k
// WebSockets with headroom.
const DefaultMaxConn = 100000

// Per-source limits used when Config.PerSourceConns and Config.PerSourceRate are zero: a client
// address may hold 1000 connections at once and open 500 per 10 s (the template says why).
const (
	DefaultPerSourceConns = 1000
	DefaultPerSourceRate  = 500
)

// LoopbackPerSource is the per-source limit for a cluster whose clients all come from loopback
// addresses (the local cluster, the load tools): high enough never to refuse anyone.
const LoopbackPerSource = 10_000_000

// Config selects how HAProxy finds the gateways. Exactly one of Docker and Servers must be set.
type Config struct {
	// Docker discovers replicas of the compose service "gateway" (port 8080) through Docker's
	// embedded DNS at 127.0.0.11, so `--scale gateway=N` needs no reload. Up to 10 replicas.
	Docker bool
	// Servers lists the gateways as host:port, one HAProxy server line each (gw1, gw2, ...), for
	// a local cluster where the addresses are known before HAProxy starts.
	Servers []string
	// Bind is the address clients connect to, as host:port (":8080", "127.0.0.1:18080").
	// Defaults to DefaultBind.
	Bind string
	// StatsBind, when set, adds a frontend on that host:port serving /metrics (Prometheus) and
	// /stats (HTML). Empty means no stats frontend.
	StatsBind string
	// MaxConn caps concurrent client connections (HAProxy's global and frontend maxconn).
	// HAProxy refuses to start unless it can raise its open-file limit to about 2×MaxConn+20
	// (strict-limits), so on a host whose hard limit (ulimit -Hn) is lower, set MaxConn below
	// half of it. Defaults to DefaultMaxConn.
	MaxConn int
	// Threads sets HAProxy's nbthread; zero leaves HAProxy's default (one thread per CPU).
	// Several single-threaded processes sharing one port (SO_REUSEPORT) are how a host whose
	// open-file limit caps each process at MaxConn proxies more connections than that: one
	// thread each, since the processes already use every CPU (BENCHMARKS.md, measured with
	// `loadtest -mode ticks -n 9000` through one HAProxy on 2 cores: 13.4 µs of HAProxy CPU per
	// forwarded tick with one thread, 16.2 µs with two).
	Threads int
	// PerSourceConns caps the connections one client address holds at once (stick table
	// conn_cur); more are refused at the TCP level. Defaults to DefaultPerSourceConns.
	PerSourceConns int
	// PerSourceRate caps the connections one client address opens per 10 s, refused ones
	// included (conn_rate(10s)). Defaults to DefaultPerSourceRate.
	PerSourceRate int
}

// Render writes the HAProxy configuration for c to w. It rejects a config that would render to
// something HAProxy misreads (both or neither discovery mode, an address that is not host:port or
// that holds whitespace), since a bad address would otherwise only surface when HAProxy starts.
func Render(w io.Writer, c Config) error {
	if c.Bind == "" {
		c.Bind = DefaultBind
	}
	if c.MaxConn == 0 {
		c.MaxConn = DefaultMaxConn
	}
	if c.PerSourceConns == 0 {
		c.PerSourceConns = DefaultPerSourceConns
	}
	if c.PerSourceRate == 0 {
		c.PerSourceRate = DefaultPerSourceRate
	}
	if err := c.validate(); err != nil {
		return fmt.Errorf("lbconfig: %w", err)
	}
	// Render in full before writing, so a failure never leaves half a config behind.
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, c); err != nil {
		return fmt.Errorf("lbconfig: render template: %w", err)
	}
	if _, err := w.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("lbconfig: write config: %w", err)
	}
	return nil
}

func (c Config) validate() error {
	switch {
	case c.Docker && len(c.Servers) > 0:
		return errors.New("set either Docker or Servers, not both")
	case !c.Docker && len(c.Servers) == 0:
		return errors.New("set Docker or at least one server in Servers")
	}
	if c.MaxConn < 1 {
		return fmt.Errorf("max conn %d: must be positive", c.MaxConn)
	}
	if c.PerSourceConns < 1 || c.PerSourceRate < 1 {
		return fmt.Errorf("per-source limits %d connections, %d per 10 s: must be positive", c.PerSourceConns, c.PerSourceRate)
	}
	if c.Threads < 0 {
		return fmt.Errorf("threads %d: must not be negative", c.Threads)
	}
	if err := checkAddr(c.Bind, false); err != nil {
		return fmt.Errorf("bind %q: %w", c.Bind, err)
	}
	if c.StatsBind != "" {
		if err := checkAddr(c.StatsBind, false); err != nil {
			return fmt.Errorf("stats bind %q: %w", c.StatsBind, err)
		}
		if c.StatsBind == c.Bind {
			return fmt.Errorf("stats bind %q: same address as bind", c.StatsBind)
		}
	}
	for i, s := range c.Servers {
		if err := checkAddr(s, true); err != nil {
			return fmt.Errorf("server %d %q: %w", i+1, s, err)
		}
	}
	return nil
}

// checkAddr accepts host:port with a numeric port; a server also needs a host, a bind may leave
// it empty to listen on every interface.
func checkAddr(addr string, needHost bool) error {
	if strings.ContainsFunc(addr, func(r rune) bool { return r <= ' ' || r == '#' || r == 0x7f }) {
		return errors.New("contains whitespace, a control character or '#'")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("not host:port: %w", err)
	}
	if needHost && host == "" {
		return errors.New("missing host")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	return nil
}

// MaxConnFor returns the largest MaxConn HAProxy can start with under an open-file limit of
// nofile (the hard RLIMIT_NOFILE of the user running it), capped at DefaultMaxConn. Each
// connection needs a client-side and a server-side descriptor; 1000 are kept for listeners,
// health checks and logs. Returns at least 1.
func MaxConnFor(nofile uint64) int {
	const reserved = 1000
	if nofile <= reserved+2 {
		return 1
	}
	return int(min((nofile-reserved)/2, DefaultMaxConn))
}
