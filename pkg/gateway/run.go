package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/wsgw/wsgw/pkg/broker"
	"github.com/wsgw/wsgw/pkg/config"
	"github.com/wsgw/wsgw/pkg/metrics"
	"github.com/wsgw/wsgw/pkg/presence"
	"github.com/wsgw/wsgw/pkg/tick"
)

// Run is the gateway program: `gateway` serves, `gateway -h` lists the settings,
// `gateway healthcheck` GETs /healthz of the gateway configured by the environment (the
// Docker HEALTHCHECK: distroless has no shell). It returns when ctx is done and the drain has
// finished; a nil error means a clean exit.
func Run(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "-h", "-help", "--help", "help":
			config.Usage(stdout, "gateway [healthcheck]", &config.Gateway{})
			return nil
		case "healthcheck":
			cfg, err := config.LoadGateway(environ)
			if err != nil {
				return err
			}
			return healthcheck(ctx, cfg.Addr)
		default:
			return fmt.Errorf("gateway: unknown argument %q (try -h)", args[0])
		}
	}
	cfg, err := config.LoadGateway(environ)
	if err != nil {
		return err
	}
	log := cfg.Log.Logger(stderr).With("gateway", cfg.ID)
	m := metrics.New()
	started := time.Now()

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("gateway: listen on %s: %w", cfg.Addr, err)
	}
	defer ln.Close()

	// The one place standalone and cluster mode differ.
	var (
		b      broker.Broker
		store  presence.Store
		ticker func(context.Context) error
		closeR = func() error { return nil }
	)
	if cfg.Redis.Enabled() {
		b, store, closeR, err = clusterMode(cfg, ln.Addr().String(), started, log, m)
		if err != nil {
			return err
		}
	} else {
		mb := broker.NewMemory()
		b, store = mb, presence.NewMemory()
		ticker = func(ctx context.Context) error {
			return tick.Run(ctx, mb.Publish, tick.Options{Interval: cfg.TickInterval, Logger: log, Metrics: m})
		}
	}
	defer closeR()

	if cfg.DebugAddr != "" {
		stopDebug, err := serveDebug(cfg.DebugAddr, log)
		if err != nil {
			return err
		}
		defer stopDebug()
	}

	srv := NewServer(log, m, b, store, Options{
		ID: cfg.ID, MaxN: cfg.FibMaxN, Rate: cfg.FibRate, Burst: cfg.FibBurst,
		ReadLimit: cfg.ReadLimit, AllowedOrigins: cfg.AllowedOrigins, DrainDelay: cfg.DrainDelay,
	})
	if err := srv.Start(); err != nil {
		return err
	}
	tickCtx, stopTicker := context.WithCancel(context.WithoutCancel(ctx))
	tickerDone := make(chan error, 1)
	if ticker != nil {
		go func() { tickerDone <- ticker(tickCtx) }()
	} else {
		tickerDone <- nil
	}

	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	mode := "standalone"
	if cfg.Redis.Enabled() {
		mode = "cluster"
	}
	log.Info("listening", "addr", ln.Addr().String(), "mode", mode)

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		stopTicker()
		return fmt.Errorf("gateway: serve: %w", err)
	}

	// Shut down with a fresh deadline: ctx is already done.
	log.Info("shutting down", "timeout", cfg.ShutdownTimeout, "drain_delay", cfg.DrainDelay)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	// The listener keeps serving during the drain: /readyz and new upgrades answer 503 (which
	// HAProxy retries elsewhere) rather than a refused connection.
	srv.Drain(sctx)
	_ = hs.Shutdown(sctx) // WebSockets are hijacked and not waited for; Drain closed them
	stopTicker()
	<-tickerDone
	var errs []error
	if err := store.Close(sctx); err != nil {
		errs = append(errs, fmt.Errorf("gateway: close presence: %w", err))
	}
	if err := b.Close(); err != nil {
		errs = append(errs, fmt.Errorf("gateway: close broker: %w", err))
	}
	log.Info("stopped")
	return errors.Join(errs...)
}

// healthcheck GETs /healthz on the local port of addr.
func healthcheck(ctx context.Context, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("healthcheck: GATEWAY_ADDR %q: %w", addr, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort("127.0.0.1", port)+"/healthz", nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: /healthz answered %s", resp.Status)
	}
	return nil
}

// serveDebug serves net/http/pprof on its own listener, opt-in through DEBUG_ADDR: profiles
// are never exposed on the public port.
func serveDebug(addr string, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("gateway: listen on DEBUG_ADDR %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	log.Info("debug listener", "addr", ln.Addr().String())
	return func() { _ = srv.Close() }, nil
}
