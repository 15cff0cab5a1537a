package gateway

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/protocol"
)

func TestRunHelp(t *testing.T) {
	var out bytes.Buffer
	if err := Run(context.Background(), []string{"-h"}, nil, &out, &out); err != nil {
		t.Fatalf("-h: %v", err)
	}
	for _, v := range []string{"REDIS_URL", "REDIS_SENTINEL_MASTER", "REDIS_ADDRS", "REDIS_PREFIX", "GATEWAY_ADDR", "GATEWAY_ID",
		"FIB_MAX_N", "FIB_RATE", "FIB_BURST", "READ_LIMIT", "ALLOWED_ORIGINS", "PRESENCE_TTL", "SHUTDOWN_TIMEOUT", "DRAIN_DELAY",
		"TICK_INTERVAL", "MAX_CONNECTIONS", "MAX_CONNECTIONS_PER_IP", "TRUSTED_PROXIES", "LOG_LEVEL", "LOG_FORMAT", ":8080", "100000", "15s", "10s"} {
		if !strings.Contains(out.String(), v) {
			t.Errorf("-h output lacks %s", v)
		}
	}
}

func TestRunBadSetting(t *testing.T) {
	for env, name := range map[string]string{
		"FIB_RATE=fast":        "FIB_RATE",
		"PRESENCE_TTL=15":      "PRESENCE_TTL",
		"READ_LIMIT=-3":        "READ_LIMIT",
		"LOG_LEVEL=loud":       "LOG_LEVEL",
		"GATEWAY_ADDR=nope":    "GATEWAY_ADDR",
		"REDIS_URL=http://x":   "REDIS_URL",
		"ALLOWED_ORIGINS=[":    "ALLOWED_ORIGINS",
		"TICK_INTERVAL=1500us": "TICK_INTERVAL",
		"FIB_MAX_N=many":       "FIB_MAX_N",
		"SHUTDOWN_TIMEOUT=-1s": "SHUTDOWN_TIMEOUT",
		"MAX_CONNECTIONS=-1":   "MAX_CONNECTIONS",
		"TRUSTED_PROXIES=x":    "TRUSTED_PROXIES",
		"DRAIN_DELAY=20s":      "DRAIN_DELAY",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := Run(ctx, nil, []string{env}, &bytes.Buffer{}, &bytes.Buffer{})
		cancel()
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: err = %v, want a message naming %s", env, err, name)
		}
	}
}

// TestRunStandalone runs the real program on a free port: it serves, and on cancel (SIGTERM)
// drains with 1001 and returns nil.
func TestRunStandalone(t *testing.T) {
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs testkit.SyncBuffer
	go func() {
		done <- Run(ctx, nil, []string{"GATEWAY_ADDR=" + addr, "TICK_INTERVAL=100ms", "GATEWAY_ID=gw-run"}, &bytes.Buffer{}, &logs)
	}()
	testkit.Eventually(t, 5*time.Second, "/healthz", func() bool {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	if err := healthcheck(context.Background(), addr); err != nil {
		t.Fatalf("healthcheck subcommand: %v", err)
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	c, _, err := websocket.Dial(dctx, "ws://"+addr+"/ws?user=ana", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if f := readFrame(t, c); f.Type != protocol.TypeWelcome || f.Gateway != "gw-run" {
		t.Fatalf("welcome = %+v", f)
	}
	if f := readFrame(t, c); f.Type != protocol.TypeTime {
		t.Fatalf("tick = %+v", f)
	}
	cancel()
	for err == nil {
		_, _, err = c.Read(dctx)
	}
	if websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("close = %v, want 1001", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	for _, want := range []string{"connect", "disconnect", "reason=drained", "user=ana", "duration="} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, logs.String())
		}
	}
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
