package config

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestGatewayDefaults(t *testing.T) {
	c, err := LoadGateway(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != ":8080" || c.FibMaxN != 100000 || c.FibRate != 20 || c.FibBurst != 40 || c.ReadLimit != 4096 ||
		c.PresenceTTL != 15*time.Second || c.ShutdownTimeout != 10*time.Second || c.TickInterval != time.Second ||
		c.Log.Level != "info" || c.Log.Format != "text" || c.Redis.Enabled() || c.ID == "" {
		t.Fatalf("defaults = %+v", c)
	}
	if c.Redis.KeyPrefix() != "ws:" {
		t.Fatalf("prefix = %q", c.Redis.KeyPrefix())
	}
}

// TestEmptyMeansDefault: a variable set but empty is the same as unset, for every kind.
func TestEmptyMeansDefault(t *testing.T) {
	c, err := LoadGateway([]string{"GATEWAY_ADDR=", "FIB_RATE=", "PRESENCE_TTL=", "PRESENCE_SHARDS=", "REDIS_URL=", "ALLOWED_ORIGINS=", "LOG_LEVEL="})
	if err != nil {
		t.Fatal(err)
	}
	if c.PresenceShards != 1 {
		t.Fatalf("PRESENCE_SHARDS default %d", c.PresenceShards)
	}
	if c.Addr != ":8080" || c.FibRate != 20 || c.PresenceTTL != 15*time.Second || c.Redis.Enabled() || len(c.AllowedOrigins) != 0 || c.Log.Level != "info" {
		t.Fatalf("empty values did not mean defaults: %+v", c)
	}
}

func TestGatewayValues(t *testing.T) {
	c, err := LoadGateway([]string{"REDIS_ADDRS=127.0.0.1:7000,127.0.0.1:7001", "ALLOWED_ORIGINS=*.a.example,https://b.example", "GATEWAY_ID=gw-9", "LOG_FORMAT=json", "PRESENCE_SHARDS=3"})
	if err != nil {
		t.Fatal(err)
	}
	if c.PresenceShards != 3 {
		t.Fatalf("PRESENCE_SHARDS = %d", c.PresenceShards)
	}
	if !c.Redis.Enabled() || !c.Redis.Cluster() || c.Redis.KeyPrefix() != "{ws}:" || len(c.AllowedOrigins) != 2 || c.ID != "gw-9" {
		t.Fatalf("values = %+v", c)
	}
	c, err = LoadGateway([]string{"REDIS_SENTINEL_MASTER=mymaster", "REDIS_ADDRS=127.0.0.1:26379"})
	if err != nil || c.Redis.Cluster() || c.Redis.KeyPrefix() != "ws:" {
		t.Fatalf("sentinel: %+v %v", c.Redis, err)
	}
}

func TestErrorsNameTheVariable(t *testing.T) {
	for env, name := range map[string]string{
		"FIB_BURST=0":             "FIB_BURST",
		"FIB_RATE=x":              "FIB_RATE",
		"PRESENCE_TTL=15":         "PRESENCE_TTL",
		"PRESENCE_SHARDS=0":       "PRESENCE_SHARDS",
		"PRESENCE_SHARDS=x":       "PRESENCE_SHARDS",
		"PRESENCE_SHARDS=2000":    "PRESENCE_SHARDS",
		"LOG_FORMAT=xml":          "LOG_FORMAT",
		"REDIS_URL=foo://bar":     "REDIS_URL",
		"REDIS_ADDRS=nohost":      "REDIS_ADDRS",
		"REDIS_SENTINEL_MASTER=m": "REDIS_SENTINEL_MASTER",
		"TICK_INTERVAL=0s":        "TICK_INTERVAL",
	} {
		_, err := LoadGateway([]string{env})
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: err = %v", env, err)
		}
	}
	// Several problems come back together.
	_, err := LoadGateway([]string{"FIB_RATE=x", "PRESENCE_TTL=1"})
	if err == nil || !strings.Contains(err.Error(), "FIB_RATE") || !strings.Contains(err.Error(), "PRESENCE_TTL") {
		t.Fatalf("aggregate: %v", err)
	}
}

func TestTicker(t *testing.T) {
	if _, err := LoadTicker(nil); err == nil || !strings.Contains(err.Error(), "REDIS_URL") {
		t.Fatalf("ticker without Redis: %v", err)
	}
	c, err := LoadTicker([]string{"REDIS_URL=redis://127.0.0.1:6379/0", "LEASE_TTL=2s"})
	if err != nil || c.LeaseTTL != 2*time.Second || c.ID == "" || c.TickInterval != time.Second {
		t.Fatalf("ticker: %+v %v", c, err)
	}
}

func TestUsage(t *testing.T) {
	var b bytes.Buffer
	Usage(&b, "ticker", &Ticker{})
	for _, v := range []string{"REDIS_URL", "TICK_INTERVAL", "TICKER_ID", "LEASE_TTL", "5s", "LOG_LEVEL", "REDIS_PREFIX"} {
		if !strings.Contains(b.String(), v) {
			t.Errorf("usage lacks %s:\n%s", v, b.String())
		}
	}
	if strings.Contains(b.String(), "GATEWAY_ADDR") {
		t.Error("ticker usage lists a gateway variable")
	}
}

func TestAdmission(t *testing.T) {
	c, err := LoadGateway(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxConnections != 0 || c.MaxPerIP != 0 || len(c.TrustedProxies) != 0 {
		t.Fatalf("admission defaults = %+v", c.Admission)
	}
	c, err = LoadGateway([]string{"MAX_CONNECTIONS=5000", "MAX_CONNECTIONS_PER_IP=20", "TRUSTED_PROXIES=10.0.0.0/8,fd00::/8,192.168.1.7/32"})
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxConnections != 5000 || c.MaxPerIP != 20 || len(c.TrustedProxies) != 3 || c.TrustedProxies[1].String() != "fd00::/8" {
		t.Fatalf("admission = %+v", c.Admission)
	}
	for env, want := range map[string]string{
		"MAX_CONNECTIONS=-1":          "MAX_CONNECTIONS: must not be negative",
		"MAX_CONNECTIONS=lots":        "MAX_CONNECTIONS: cannot parse",
		"MAX_CONNECTIONS_PER_IP=-2":   "MAX_CONNECTIONS_PER_IP: must not be negative",
		"TRUSTED_PROXIES=10.0.0.0/33": "TRUSTED_PROXIES: cannot parse",
		"TRUSTED_PROXIES=10.0.0.1":    "TRUSTED_PROXIES: cannot parse",
		"TRUSTED_PROXIES=proxy":       "TRUSTED_PROXIES: cannot parse",
		"TRUSTED_PROXIES=10.1.2.3/8":  "TRUSTED_PROXIES: 10.1.2.3/8 has host bits set",
	} {
		if _, err := LoadGateway([]string{env}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", env, err, want)
		}
	}
}

// TestDrainDelay: DRAIN_DELAY must leave time inside SHUTDOWN_TIMEOUT to close the sockets,
// and the message names both variables.
func TestDrainDelay(t *testing.T) {
	c, err := LoadGateway([]string{"DRAIN_DELAY=3s", "SHUTDOWN_TIMEOUT=10s"})
	if err != nil || c.DrainDelay != 3*time.Second {
		t.Fatalf("DRAIN_DELAY=3s: %v, %v", c.DrainDelay, err)
	}
	for _, env := range [][]string{
		{"DRAIN_DELAY=10s"},                       // equal to the default SHUTDOWN_TIMEOUT
		{"DRAIN_DELAY=5s", "SHUTDOWN_TIMEOUT=2s"}, // longer
	} {
		_, err := LoadGateway(env)
		if err == nil || !strings.Contains(err.Error(), "DRAIN_DELAY") || !strings.Contains(err.Error(), "SHUTDOWN_TIMEOUT") {
			t.Errorf("%v: err = %v, want a message naming DRAIN_DELAY and SHUTDOWN_TIMEOUT", env, err)
		}
	}
	for env, name := range map[string]string{"DRAIN_DELAY=-1s": "DRAIN_DELAY", "DRAIN_DELAY=3": "DRAIN_DELAY"} {
		if _, err := LoadGateway([]string{env}); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: err = %v", env, err)
		}
	}
}
