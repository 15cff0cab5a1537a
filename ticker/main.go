// Command ticker publishes the time frame on Redis once per TICK_INTERVAL while it holds the
// publishing lease. Run several: one publishes, the others stand by. `ticker -h` lists the
// settings; `ticker healthcheck` PINGs Redis (the Docker HEALTHCHECK).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/wsgw/wsgw/pkg/broker"
	"github.com/wsgw/wsgw/pkg/config"
	"github.com/wsgw/wsgw/pkg/lease"
	"github.com/wsgw/wsgw/pkg/metrics"
	"github.com/wsgw/wsgw/pkg/rediskey"
	"github.com/wsgw/wsgw/pkg/tick"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "ticker:", err)
		os.Exit(1)
	}
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
	prefix := cfg.Redis.KeyPrefix()
	b := broker.NewRedis(client, broker.RedisOptions{Prefix: prefix, TickInterval: cfg.TickInterval, Logger: log})
	defer b.Close()
	m := metrics.New()
	// The lease compares this clock with Redis TIME at every renewal and steps aside while
	// they differ by more than half an interval (docs/PROTOCOL.md, Ticks).
	l := lease.NewRedis(client, rediskey.New(prefix).TickerLeader(), cfg.ID, cfg.LeaseTTL,
		lease.WithClock(time.Now, cfg.TickInterval/2), lease.WithMetrics(m))
	log.Info("ticker starting", "interval", cfg.TickInterval, "lease_ttl", cfg.LeaseTTL, "prefix", prefix)
	err = tick.Run(ctx, b.Publish, tick.Options{Interval: cfg.TickInterval, Lease: l, Logger: log, Metrics: m})
	log.Info("ticker stopped")
	return err
}
