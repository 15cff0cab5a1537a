package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/wsgw/wsgw/pkg/admission"
	"github.com/wsgw/wsgw/pkg/auth"
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
			config.Usage(stdout, "gateway [healthcheck | token -user NAME [-ttl 1h]]", &config.Gateway{})
			return nil
		case "token":
			return printToken(args[1:], environ, stdout, stderr)
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
	ln = admission.Listener(ln, admission.ListenerOptions{Log: log, Errors: m.AcceptErrors})

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

	opts := Options{
		ID: cfg.ID, MaxN: cfg.FibMaxN, Rate: cfg.FibRate, Burst: cfg.FibBurst,
		ReadLimit: cfg.ReadLimit, AllowedOrigins: cfg.AllowedOrigins, DrainDelay: cfg.DrainDelay, TickInterval: cfg.TickInterval,
		Admission: admission.Options{MaxConnections: cfg.MaxConnections, MaxPerIP: cfg.MaxPerIP, TrustedProxies: cfg.TrustedProxies},
	}
	if cfg.Auth.Enabled() {
		ao := cfg.Auth.Options()
		ao.Logger = log
		v, err := auth.New(ao)
		if err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
		defer v.Close()
		opts.Auth, opts.AuthLeeway = v, auth.DefaultLeeway
		log.Info("authentication on", "hmac", ao.Secret != nil, "public_key", cfg.Auth.JWTPublicKeyFile, "jwks", cfg.Auth.JWKSURL)
	}
	srv := NewServer(log, m, b, store, opts)
	public := srv.Handler()
	if cfg.AdminAddr != "" {
		public = srv.PublicHandler()
		stopAdmin, err := serveSide("ADMIN_ADDR", cfg.AdminAddr, srv.AdminHandler(), log)
		if err != nil {
			return err
		}
		defer stopAdmin()
	}
	if cfg.DebugAddr != "" {
		mux := http.NewServeMux()
		pprofRoutes(mux)
		stopDebug, err := serveSide("DEBUG_ADDR", cfg.DebugAddr, mux, log)
		if err != nil {
			return err
		}
		defer stopDebug()
	}

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

	hs := newHTTPServer(public, log, httpIdleTimeout)
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	mode := "standalone"
	if cfg.Redis.Enabled() {
		mode = "cluster"
	}
	log.Info("listening", "addr", ln.Addr().String(), "mode", mode, "max_connections", srv.adm.Max(), "max_connections_per_ip", cfg.MaxPerIP)

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

// httpIdleTimeout is how long an idle keep-alive HTTP connection stays open (docs/PROTOCOL.md).
const httpIdleTimeout = 60 * time.Second

// newHTTPServer is the gateway's http.Server; idle is its IdleTimeout (httpIdleTimeout in
// Run, shorter in tests).
func newHTTPServer(h http.Handler, log *slog.Logger, idle time.Duration) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       idle,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ConnContext:       withSocket,
	}
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

// serveSide serves h on its own listener at addr (ADMIN_ADDR, DEBUG_ADDR): operator routes are
// never exposed on the public port when one is set.
func serveSide(name, addr string, h http.Handler, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("gateway: listen on %s %s: %w", name, addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	log.Info("side listener", "var", name, "addr", ln.Addr().String())
	return func() { _ = srv.Close() }, nil
}
