// Command ticker publishes the time frame on Redis once per TICK_INTERVAL while it holds the
// publishing lease. Run several: one publishes, the others stand by. `ticker -h` lists the
// settings; `ticker healthcheck` PINGs Redis (the Docker HEALTHCHECK). With ADMIN_ADDR set it
// serves /healthz and /metrics there.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/wsgw/wsgw/internal/cli"
	"github.com/wsgw/wsgw/pkg/broker"
	"github.com/wsgw/wsgw/pkg/config"
	"github.com/wsgw/wsgw/pkg/lease"
	"github.com/wsgw/wsgw/pkg/metrics"
	"github.com/wsgw/wsgw/pkg/rediskey"
	"github.com/wsgw/wsgw/pkg/tick"
)

func main() {
	cli.Main("ticker", func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr) })
}

func run(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	healthcheck := false
	if len(args) > 0 {
		switch args[0] {
		case "-h", "-help", "--help", "help":
			config.Usage(stdout, "ticker [healthcheck]", &config.Ticker{})
			return nil
		case "healthcheck":
			healthcheck = true
		default:
			return fmt.Errorf("unknown argument %q (try -h)", args[0])
		}
	}
	cfg, err := config.LoadTicker(environ)
	if err != nil {
		return err
	}
	client, err := cfg.Redis.NewClient()
	if err != nil {
		return err
	}
	defer client.Close()
	if healthcheck {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if err := client.Ping(pctx).Err(); err != nil {
			return fmt.Errorf("healthcheck: ping redis: %w", err)
		}
		return nil
	}

	log := cfg.Log.Logger(stderr).With("ticker", cfg.ID)
	m := metrics.New()
	if cfg.AdminAddr != "" {
		stop, err := serveAdmin(cfg.AdminAddr, m, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	prefix := cfg.Redis.KeyPrefix()
	b := broker.NewRedis(client, broker.RedisOptions{Prefix: prefix, TickInterval: cfg.TickInterval, Logger: log})
	defer b.Close()
	// The lease compares this clock with Redis TIME at every renewal and steps aside while
	// they differ by more than half an interval (docs/PROTOCOL.md, Ticks).
	l := lease.NewRedis(client, rediskey.New(prefix).TickerLeader(), cfg.ID, cfg.LeaseTTL,
		lease.WithClock(time.Now, cfg.TickInterval/2), lease.WithMetrics(m))
	log.Info("ticker starting", "interval", cfg.TickInterval, "lease_ttl", cfg.LeaseTTL, "prefix", prefix)
	err = tick.Run(ctx, b.Publish, tick.Options{Interval: cfg.TickInterval, Lease: l, Logger: log, Metrics: m})
	log.Info("ticker stopped")
	return err
}

// serveAdmin serves /healthz (200 while the process runs) and /metrics (lease held, lease
// changes, ticks published) on ADMIN_ADDR.
func serveAdmin(addr string, m *metrics.Metrics, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on ADMIN_ADDR %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	log.Info("admin listener", "addr", ln.Addr().String())
	return func() { _ = srv.Close() }, nil
}
