package testkit

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Toxiproxy's NewServer takes a zerolog logger, which is why github.com/rs/zerolog is a (test
// only) dependency of this module: nothing of the product imports it.

// Toxiproxy is an in-process Toxiproxy proxy on a free loopback port in front of one
// upstream (a Redis, usually): tests point a client at Addr and add network faults.
type Toxiproxy struct {
	p *toxiproxy.Proxy
}

// StartToxiproxy starts a proxy to upstream; it is stopped when the test ends.
func StartToxiproxy(tb testing.TB, upstream string) *Toxiproxy {
	tb.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, strings.ReplaceAll(tb.Name(), "/", "_"), "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		tb.Fatalf("toxiproxy: start proxy to %s: %v", upstream, err)
	}
	tb.Cleanup(p.Stop)
	return &Toxiproxy{p: p}
}

// Proxy is the proxy itself, for faults these helpers do not cover (Stop and Start, toxics
// added from a goroutine, where a failed add must be reported with Errorf).
func (t *Toxiproxy) Proxy() *toxiproxy.Proxy { return t.p }

// Addr is the proxy's host:port.
func (t *Toxiproxy) Addr() string { return t.p.Listen }

// Latency delays every chunk from upstream by latency ± jitter, under the name "latency".
func (t *Toxiproxy) Latency(tb testing.TB, latency, jitter time.Duration) {
	tb.Helper()
	t.Add(tb, fmt.Sprintf(`{"name":"latency","type":"latency","stream":"downstream","attributes":{"latency":%d,"jitter":%d}}`,
		latency.Milliseconds(), jitter.Milliseconds()))
}

// Add adds a toxic described in Toxiproxy's JSON form, e.g.
// {"name":"mute","type":"timeout","stream":"downstream","attributes":{"timeout":0}}.
func (t *Toxiproxy) Add(tb testing.TB, toxicJSON string) {
	tb.Helper()
	if _, err := t.p.Toxics.AddToxicJson(strings.NewReader(toxicJSON)); err != nil {
		tb.Fatalf("toxiproxy: add toxic %s: %v", toxicJSON, err)
	}
}

// Remove removes the toxic named name.
func (t *Toxiproxy) Remove(tb testing.TB, name string) {
	tb.Helper()
	if err := t.p.Toxics.RemoveToxic(context.Background(), name); err != nil {
		tb.Fatalf("toxiproxy: remove toxic %s: %v", name, err)
	}
}

// Blackhole makes the proxy drop every byte both ways without closing anything (a partition
// with no RST) until the returned func is called.
func (t *Toxiproxy) Blackhole(tb testing.TB) (heal func()) {
	tb.Helper()
	dirs := []string{"upstream", "downstream"}
	for _, dir := range dirs {
		t.Add(tb, fmt.Sprintf(`{"name":"hole_%s","type":"timeout","stream":%q,"attributes":{"timeout":0}}`, dir, dir))
	}
	return func() {
		for _, dir := range dirs {
			t.Remove(tb, "hole_"+dir)
		}
	}
}
