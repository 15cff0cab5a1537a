// Package config reads each program's settings from the environment with caarlos0/env, as
// docs/PROTOCOL.md's configuration table defines them, and validates them so that a bad
// value stops the program at start with a message naming the variable.
//
// A variable that is set but empty means its default, exactly like an unset one (caarlos0/env
// behaves so for envDefault, and we keep it for every variable so the rule is uniform).
//
// Entry points: LoadGateway, LoadTicker, Usage.
package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path"
	"reflect"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/wsgw/wsgw/pkg/auth"
	"github.com/wsgw/wsgw/pkg/rediskey"
)

// Redis selects the Redis deployment: REDIS_URL for one server, REDIS_SENTINEL_MASTER with
// REDIS_ADDRS for Sentinel, REDIS_ADDRS alone for Cluster.
type Redis struct {
	URL            string   `env:"REDIS_URL" help:"redis://host:port/db or rediss:// (TLS); empty on the gateway means standalone mode"`
	SentinelMaster string   `env:"REDIS_SENTINEL_MASTER" help:"Sentinel master name (with REDIS_ADDRS listing the sentinels)"`
	Addrs          []string `env:"REDIS_ADDRS" envSeparator:"," help:"comma-separated host:port of Sentinels or Cluster nodes, instead of REDIS_URL"`
	Prefix         string   `env:"REDIS_PREFIX" help:"prefix of every key and channel; default ws: ({ws}: in Cluster mode, so scripts touch one slot)"`
}

// Log configures slog.
type Log struct {
	Level  string `env:"LOG_LEVEL" envDefault:"info" help:"debug, info, warn or error"`
	Format string `env:"LOG_FORMAT" envDefault:"text" help:"text or json"`
}

// Gateway is the gateway's configuration.
type Gateway struct {
	Redis
	Addr            string        `env:"GATEWAY_ADDR" envDefault:":8080" help:"listen address for /ws and the HTTP endpoints"`
	ID              string        `env:"GATEWAY_ID" help:"id written in presence and heartbeats; default host name plus a random suffix"`
	FibMaxN         int           `env:"FIB_MAX_N" envDefault:"100000" help:"largest n accepted"`
	FibRate         float64       `env:"FIB_RATE" envDefault:"20" help:"per-connection Fibonacci requests per second"`
	FibBurst        int           `env:"FIB_BURST" envDefault:"40" help:"per-connection request burst"`
	ReadLimit       int64         `env:"READ_LIMIT" envDefault:"4096" help:"largest client frame in bytes; larger closes with 1009"`
	AllowedOrigins  []string      `env:"ALLOWED_ORIGINS" envSeparator:"," help:"extra browser origins allowed to open /ws (coder/websocket OriginPatterns)"`
	PresenceTTL     time.Duration `env:"PRESENCE_TTL" envDefault:"15s" help:"heartbeat key TTL; refreshed every TTL/3"`
	PresenceShards  int           `env:"PRESENCE_SHARDS" envDefault:"1" help:"presence hashes (1: one ws:presence; N: ws:presence:0..N-1, each its own Cluster slot); all gateways must agree"`
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"10s" help:"how long a drain may take on SIGTERM (DRAIN_DELAY included)"`
	DrainDelay      time.Duration `env:"DRAIN_DELAY" envDefault:"0s" help:"how long a draining gateway keeps serving its open sockets, unready, before closing them with 1001"`
	TickInterval    time.Duration `env:"TICK_INTERVAL" envDefault:"1s" help:"time between ticks (standalone mode)"`
	DebugAddr       string        `env:"DEBUG_ADDR" help:"opt-in listener serving /debug/pprof only, e.g. 127.0.0.1:6060; empty: off (ADMIN_ADDR serves it too)"`
	AdminAddr       string        `env:"ADMIN_ADDR" help:"listener for /users, /metrics and /debug/pprof/, e.g. 127.0.0.1:9090; empty keeps /users and /metrics on GATEWAY_ADDR"`
	Admission
	Auth
	Log
}

// Admission limits the sockets a gateway holds (docs/PROTOCOL.md "Admission"); pkg/admission
// applies it.
type Admission struct {
	MaxConnections int            `env:"MAX_CONNECTIONS" envDefault:"0" help:"sockets held at most, more get 503 before upgrade; 0: the open-file soft limit - 1024"`
	MaxPerIP       int            `env:"MAX_CONNECTIONS_PER_IP" envDefault:"0" help:"sockets one client address may hold; 0: no limit"`
	TrustedProxies []netip.Prefix `env:"TRUSTED_PROXIES" envSeparator:"," help:"comma-separated CIDRs whose X-Forwarded-For is believed (the load balancer's)"`
}

func (a Admission) validate() error {
	var errs []error
	if a.MaxConnections < 0 {
		errs = append(errs, fmt.Errorf("MAX_CONNECTIONS: must not be negative (0 means the default), got %d", a.MaxConnections))
	}
	if a.MaxPerIP < 0 {
		errs = append(errs, fmt.Errorf("MAX_CONNECTIONS_PER_IP: must not be negative (0 means no limit), got %d", a.MaxPerIP))
	}
	for _, p := range a.TrustedProxies {
		if p != p.Masked() {
			errs = append(errs, fmt.Errorf("TRUSTED_PROXIES: %s has host bits set; did you mean %s?", p, p.Masked()))
		}
	}
	return errors.Join(errs...)
}

// Auth configures the optional token authentication; any key setting turns it on.
type Auth struct {
	JWTSecret        string `env:"AUTH_JWT_SECRET" help:"HMAC key (HS256/384/512); turns authentication on"`
	JWTPublicKeyFile string `env:"AUTH_JWT_PUBLIC_KEY_FILE" help:"PEM file of an RSA, ECDSA or Ed25519 public key; turns authentication on"`
	JWKSURL          string `env:"AUTH_JWKS_URL" help:"JWKS endpoint (refreshed in the background, unknown kid refetched at most once a minute); turns authentication on"`
	JWTIssuer        string `env:"AUTH_JWT_ISSUER" help:"required iss when set"`
	JWTAudience      string `env:"AUTH_JWT_AUDIENCE" help:"required aud when set"`
	UserClaim        string `env:"AUTH_USER_CLAIM" envDefault:"sub" help:"the claim that names the user"`

	// PublicKeyPEM is the content of JWTPublicKeyFile, read and checked at load.
	PublicKeyPEM []byte
}

// Enabled reports whether authentication is on.
func (a Auth) Enabled() bool {
	return a.JWTSecret != "" || a.JWTPublicKeyFile != "" || a.JWKSURL != ""
}

// minSecretLen is the shortest AUTH_JWT_SECRET accepted: HS256 with fewer than 32 bytes of key
// is brute-forceable offline from any one token (RFC 7518 §3.2).
const minSecretLen = 32

func (a *Auth) validate() error {
	var errs []error
	if a.JWTSecret != "" && len(a.JWTSecret) < minSecretLen {
		errs = append(errs, fmt.Errorf("AUTH_JWT_SECRET: must be at least %d bytes, got %d", minSecretLen, len(a.JWTSecret)))
	}
	if a.JWTPublicKeyFile != "" {
		b, err := os.ReadFile(a.JWTPublicKeyFile)
		if err == nil {
			_, _, err = auth.ParsePublicKey(b)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("AUTH_JWT_PUBLIC_KEY_FILE: %s: %w", a.JWTPublicKeyFile, err))
		} else {
			a.PublicKeyPEM = b
		}
	}
	if a.JWKSURL != "" {
		if u, err := url.Parse(a.JWKSURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Errorf("AUTH_JWKS_URL: %q is not an http(s) URL", a.JWKSURL))
		}
	}
	if !a.Enabled() && (a.JWTIssuer != "" || a.JWTAudience != "") {
		errs = append(errs, errors.New("AUTH_JWT_ISSUER, AUTH_JWT_AUDIENCE: need AUTH_JWT_SECRET, AUTH_JWT_PUBLIC_KEY_FILE or AUTH_JWKS_URL"))
	}
	if strings.TrimSpace(a.UserClaim) != a.UserClaim {
		errs = append(errs, fmt.Errorf("AUTH_USER_CLAIM: %q has surrounding spaces", a.UserClaim))
	}
	return errors.Join(errs...)
}

// Options are the auth package's options for these settings; call only when Enabled.
func (a Auth) Options() auth.Options {
	return auth.Options{
		Secret: []byte(a.JWTSecret), PublicKeyPEM: a.PublicKeyPEM, JWKSURL: a.JWKSURL,
		Issuer: a.JWTIssuer, Audience: a.JWTAudience, UserClaim: a.UserClaim,
	}
}

// Ticker is the ticker's configuration.
type Ticker struct {
	Redis
	TickInterval time.Duration `env:"TICK_INTERVAL" envDefault:"1s" help:"time between ticks"`
	ID           string        `env:"TICKER_ID" help:"the lease holder's id; default host name plus a random suffix"`
	LeaseTTL     time.Duration `env:"LEASE_TTL" envDefault:"5s" help:"publishing lease TTL"`
	AdminAddr    string        `env:"ADMIN_ADDR" help:"listener for /healthz and /metrics, e.g. 127.0.0.1:9091; empty: none"`
	Log
}

// GatewayDefaults are the gateway's settings as their envDefault tags give them: the one
// source of the defaults that code building a gateway without an environment needs
// (gateway.Options, presence.RedisOptions).
func GatewayDefaults() Gateway {
	var c Gateway
	_ = parse(&c, nil) // the tags are constants: config_test checks they parse
	return c
}

// TickerDefaults are the ticker's settings as their envDefault tags give them.
func TickerDefaults() Ticker {
	var c Ticker
	_ = parse(&c, nil)
	return c
}

// LoadGateway reads and validates the gateway's settings from environ (os.Environ() form).
func LoadGateway(environ []string) (Gateway, error) {
	var c Gateway
	if err := parse(&c, environ); err != nil {
		return c, err
	}
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	add(c.Redis.validate(false))
	add(c.Log.validate())
	add(c.Admission.validate())
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		add(fmt.Errorf("GATEWAY_ADDR: %q is not host:port: %w", c.Addr, err))
	}
	add(validAddr("DEBUG_ADDR", c.DebugAddr))
	add(validAddr("ADMIN_ADDR", c.AdminAddr))
	add(c.Auth.validate())
	if c.FibMaxN < 0 || c.FibMaxN > 10_000_000 {
		add(fmt.Errorf("FIB_MAX_N: %d is out of range 0..10000000", c.FibMaxN))
	}
	if !(c.FibRate > 0) {
		add(fmt.Errorf("FIB_RATE: must be above 0, got %v", c.FibRate))
	}
	if c.FibBurst < 1 {
		add(fmt.Errorf("FIB_BURST: must be at least 1, got %d", c.FibBurst))
	}
	if c.ReadLimit < 64 {
		add(fmt.Errorf("READ_LIMIT: must be at least 64 bytes, got %d", c.ReadLimit))
	}
	for _, p := range c.AllowedOrigins {
		if _, err := path.Match(p, ""); err != nil {
			add(fmt.Errorf("ALLOWED_ORIGINS: bad pattern %q: %w", p, err))
		}
	}
	if c.PresenceTTL < time.Second {
		add(fmt.Errorf("PRESENCE_TTL: must be at least 1s, got %v", c.PresenceTTL))
	}
	if c.PresenceShards < 1 || c.PresenceShards > 1024 {
		add(fmt.Errorf("PRESENCE_SHARDS: must be from 1 to 1024, got %d", c.PresenceShards))
	}
	if c.ShutdownTimeout <= 0 {
		add(fmt.Errorf("SHUTDOWN_TIMEOUT: must be above 0, got %v", c.ShutdownTimeout))
	}
	switch {
	case c.DrainDelay < 0:
		add(fmt.Errorf("DRAIN_DELAY: must not be negative, got %v", c.DrainDelay))
	case c.ShutdownTimeout > 0 && c.DrainDelay >= c.ShutdownTimeout:
		// SHUTDOWN_TIMEOUT bounds the whole drain: a delay as long leaves no time to close.
		add(fmt.Errorf("DRAIN_DELAY: %v must be shorter than SHUTDOWN_TIMEOUT (%v), which bounds the whole drain", c.DrainDelay, c.ShutdownTimeout))
	}
	add(validInterval(c.TickInterval))
	if c.ID == "" {
		c.ID = DefaultID("gw")
	}
	return c, errors.Join(errs...)
}

// LoadTicker reads and validates the ticker's settings. REDIS_URL (or REDIS_ADDRS) is required.
func LoadTicker(environ []string) (Ticker, error) {
	var c Ticker
	if err := parse(&c, environ); err != nil {
		return c, err
	}
	errs := []error{c.Redis.validate(true), c.Log.validate(), validInterval(c.TickInterval), validAddr("ADMIN_ADDR", c.AdminAddr)}
	if c.LeaseTTL < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("LEASE_TTL: must be at least 10ms, got %v", c.LeaseTTL))
	}
	if c.ID == "" {
		c.ID = DefaultID("tk")
	}
	return c, errors.Join(errs...)
}

// validAddr checks an optional listen address.
func validAddr(name, addr string) error {
	if addr == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%s: %q is not host:port: %w", name, addr, err)
	}
	return nil
}

func validInterval(d time.Duration) error {
	if d < time.Millisecond || d%time.Millisecond != 0 {
		return fmt.Errorf("TICK_INTERVAL: must be a whole number of milliseconds, at least 1ms, got %v", d)
	}
	return nil
}

// Enabled reports whether a Redis deployment is configured (cluster mode).
func (r Redis) Enabled() bool { return r.URL != "" || len(r.Addrs) > 0 }

// Cluster reports whether REDIS_ADDRS names Cluster nodes.
func (r Redis) Cluster() bool { return r.URL == "" && r.SentinelMaster == "" && len(r.Addrs) > 0 }

// KeyPrefix is REDIS_PREFIX or its default: "ws:", or "{ws}:" in Cluster mode.
func (r Redis) KeyPrefix() string {
	switch {
	case r.Prefix != "":
		return r.Prefix
	case r.Cluster():
		return rediskey.ClusterPrefix
	}
	return rediskey.DefaultPrefix
}

func (r Redis) validate(required bool) error {
	var errs []error
	if required && !r.Enabled() {
		errs = append(errs, errors.New("REDIS_URL: required (or REDIS_ADDRS for Sentinel/Cluster)"))
	}
	if r.URL != "" && len(r.Addrs) > 0 {
		errs = append(errs, errors.New("REDIS_URL and REDIS_ADDRS: set one, not both"))
	}
	if r.SentinelMaster != "" && len(r.Addrs) == 0 {
		errs = append(errs, errors.New("REDIS_SENTINEL_MASTER: needs REDIS_ADDRS listing the sentinels"))
	}
	if r.URL != "" {
		if _, err := redisOptions(r); err != nil {
			errs = append(errs, err)
		}
	}
	for _, a := range r.Addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("REDIS_ADDRS: %q is not host:port", a))
		}
	}
	return errors.Join(errs...)
}

func (l Log) validate() error {
	var errs []error
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(l.Level)); err != nil {
		errs = append(errs, fmt.Errorf("LOG_LEVEL: %q is not debug, info, warn or error", l.Level))
	}
	if l.Format != "text" && l.Format != "json" {
		errs = append(errs, fmt.Errorf("LOG_FORMAT: %q is not text or json", l.Format))
	}
	return errors.Join(errs...)
}

// Logger builds the slog logger these settings describe, writing to w.
func (l Log) Logger(w io.Writer) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(l.Level)) // validated at load
	opts := &slog.HandlerOptions{Level: lv}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// parse runs caarlos0/env over environ, treating set-but-empty variables as unset.
func parse(v any, environ []string) error {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, val, ok := strings.Cut(kv, "="); ok && val != "" {
			m[k] = val
		}
	}
	err := env.ParseWithOptions(v, env.Options{Environment: m})
	if err == nil {
		return nil
	}
	// caarlos0/env names the Go field in parse errors; users know the variable. Say both the
	// variable and its value.
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return fmt.Errorf("config: %w", err)
	}
	vars := map[string]string{}
	walk(reflect.TypeOf(v).Elem(), func(f reflect.StructField) { vars[f.Name] = f.Tag.Get("env") })
	var errs []error
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) && vars[pe.Name] != "" {
			name := vars[pe.Name]
			errs = append(errs, fmt.Errorf("%s: cannot parse %q as %s: %w", name, m[name], typeName(pe.Type), pe.Err))
			continue
		}
		errs = append(errs, e)
	}
	return errors.Join(errs...)
}

func typeName(t reflect.Type) string {
	switch {
	case t == reflect.TypeOf(time.Duration(0)):
		return "a duration with a unit (e.g. 15s)"
	case t.Kind() == reflect.Float64:
		return "a number"
	case t.Kind() == reflect.Int, t.Kind() == reflect.Int64:
		return "an integer"
	case t == reflect.TypeOf(netip.Prefix{}), t == reflect.TypeOf([]netip.Prefix{}):
		return "comma-separated CIDRs (e.g. 10.0.0.0/8,192.168.1.7/32)"
	}
	return t.String()
}

// Usage writes every variable of cfg (a pointer to Gateway or Ticker) with its default and
// meaning, for -h.
func Usage(w io.Writer, program string, cfg any) {
	fmt.Fprintf(w, "Usage: %s\n\nSettings come from the environment; unset or empty means the default.\n\n", program)
	fmt.Fprintf(w, "  %-22s %-10s %s\n", "VARIABLE", "DEFAULT", "MEANING")
	walk(reflect.TypeOf(cfg).Elem(), func(f reflect.StructField) {
		def := f.Tag.Get("envDefault")
		if def == "" {
			def = "-"
		}
		fmt.Fprintf(w, "  %-22s %-10s %s\n", f.Tag.Get("env"), def, f.Tag.Get("help"))
	})
}

func walk(t reflect.Type, fn func(reflect.StructField)) {
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous {
			walk(f.Type, fn)
			continue
		}
		if f.Tag.Get("env") != "" {
			fn(f)
		}
	}
}

// DefaultID is the host name plus a random suffix, e.g. "web-1-3fa2c1"; prefix is used when
// the host name is unknown.
func DefaultID(prefix string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = prefix
	}
	return host + "-" + RandomHex(3)
}
