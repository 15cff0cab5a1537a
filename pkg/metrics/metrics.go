// Package metrics defines every Prometheus collector of the gateway and the ticker in one
// place, registered on a private registry (never the global one, so tests can build as many
// servers as they like). Components receive *Metrics through their constructors.
//
// Entry points: New, Metrics.Handler.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds the collectors. Every field is safe for concurrent use.
type Metrics struct {
	Registry *prometheus.Registry

	// Connections.
	ConnectionsOpen prometheus.Gauge
	Connects        prometheus.Counter
	Disconnects     *prometheus.CounterVec // reason: closed, drained, slow_consumer, rate_limit, too_big, invalid_utf8, ping_timeout, token_expired, error
	Rejected        *prometheus.CounterVec // reason: bad_user, unauthorized, forbidden_user, origin, handshake, draining, full, per_ip
	ConnectionsMax  prometheus.Gauge       // MAX_CONNECTIONS as resolved at start
	AcceptErrors    *prometheus.CounterVec // class: emfile, enfile, other
	FramesIn        *prometheus.CounterVec // type: fib, refresh, invalid
	FramesOut       *prometheus.CounterVec // type: welcome, time, fib, error, refreshed
	SlowConsumers   prometheus.Counter

	// Fibonacci.
	FibDuration prometheus.Histogram
	FibResults  *prometheus.CounterVec // outcome: ok, invalid_n, bad_request, rate_limited, busy, bad_token, abandoned

	// Ticks.
	TickFanout       prometheus.Histogram
	TicksForwarded   prometheus.Counter
	TicksDuplicate   prometheus.Counter
	TicksRejected    *prometheus.CounterVec // reason: future
	TicksPublished   prometheus.Counter
	PubSubReconnects prometheus.Counter

	// Presence (cluster mode).
	PresenceWrites   prometheus.Counter
	PresenceFailures prometheus.Counter
	Sweeps           prometheus.Counter
	SweptConnections prometheus.Counter

	// Ticker lease.
	LeaseChanges prometheus.Counter
	LeaseHeld    prometheus.Gauge
	ClockOffset  prometheus.Gauge // ticker's clock minus Redis TIME, in seconds
}

// New creates the collectors on a fresh private registry, with the Go and process collectors.
func New() *Metrics {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	m := &Metrics{Registry: r}

	m.ConnectionsOpen = gauge(f, "ws_connections_open", "WebSocket connections currently open.")
	m.Connects = counter(f, "ws_connects_total", "WebSocket connections accepted.")
	m.Disconnects = counterVec(f, "ws_disconnects_total", "WebSocket connections closed, by reason.", "reason")
	m.Rejected = counterVec(f, "ws_rejected_total", "Upgrade requests refused before the upgrade, by reason.", "reason")
	m.ConnectionsMax = gauge(f, "ws_connections_max", "MAX_CONNECTIONS: sockets this gateway holds at most before answering upgrades 503.")
	m.AcceptErrors = counterVec(f, "accept_errors_total", "Errors accepting TCP connections, by class (emfile: out of file descriptors).", "class")
	m.FramesIn = counterVec(f, "ws_frames_in_total", "Client frames received, by parsed type.", "type")
	m.FramesOut = counterVec(f, "ws_frames_out_total", "Frames queued to clients, by type.", "type")
	m.SlowConsumers = counter(f, "ws_slow_consumers_total", "Connections closed with 1008 because their outbound queue overflowed or a write timed out.")

	m.FibDuration = histogram(f, "fib_duration_seconds", "Time to compute and format F(n).",
		prometheus.ExponentialBuckets(1e-6, 4, 12))
	m.FibResults = counterVec(f, "fib_requests_total", "Fibonacci requests, by outcome.", "outcome")

	m.TickFanout = histogram(f, "tick_fanout_seconds", "Time to queue one tick to every local connection.",
		prometheus.ExponentialBuckets(1e-5, 4, 10))
	m.TicksForwarded = counter(f, "ticks_forwarded_total", "Ticks fanned out to local connections.")
	m.TicksDuplicate = counter(f, "ticks_duplicate_total", "Ticks dropped because their seq was not newer than the last forwarded.")
	m.TicksRejected = counterVec(f, "ticks_rejected_total", "Ticks refused and not forwarded, by reason (future: more than 2 intervals ahead of this gateway's clock).", "reason")
	m.TicksPublished = counter(f, "ticks_published_total", "Ticks published by this process's ticker.")
	m.PubSubReconnects = counter(f, "pubsub_reconnects_total", "Times the tick subscription was (re)established after the first.")

	m.PresenceWrites = counter(f, "presence_writes_total", "Presence changes written to the store.")
	m.PresenceFailures = counter(f, "presence_write_failures_total", "Presence batches that failed and will be retried.")
	m.Sweeps = counter(f, "presence_sweeps_total", "Dead gateways swept.")
	m.SweptConnections = counter(f, "presence_swept_connections_total", "Connections removed by sweeps of dead gateways.")

	m.LeaseChanges = counter(f, "ticker_lease_changes_total", "Times this ticker gained or lost the publishing lease.")
	m.LeaseHeld = gauge(f, "ticker_lease_held", "1 while this ticker holds the publishing lease.")
	m.ClockOffset = gauge(f, "ticker_clock_offset_seconds", "This ticker's clock minus Redis TIME at the last lease check (positive: ahead).")
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

func counter(reg func(prometheus.Collector), name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	reg(c)
	return c
}

func counterVec(reg func(prometheus.Collector), name, help, label string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{label})
	reg(c)
	return c
}

func gauge(reg func(prometheus.Collector), name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	reg(g)
	return g
}

func histogram(reg func(prometheus.Collector), name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
	reg(h)
	return h
}
