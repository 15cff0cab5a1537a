package loadgen

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wsgw/wsgw/pkg/broker"
	"github.com/wsgw/wsgw/pkg/gateway"
	"github.com/wsgw/wsgw/pkg/metrics"
	"github.com/wsgw/wsgw/pkg/presence"
	"github.com/wsgw/wsgw/pkg/tick"
)

// tickInterval makes tests see ten ticks a second instead of one.
const tickInterval = 100 * time.Millisecond

// startGateway runs a standalone gateway with its own ticker on a real loopback socket and
// returns its ws:// URL. Everything stops when the test ends.
func startGateway(t testing.TB, opts gateway.Options) string {
	t.Helper()
	b := broker.NewMemory()
	srv := gateway.NewServer(slog.New(slog.DiscardHandler), metrics.New(), b, presence.NewMemory(), opts)
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = tick.Run(ctx, b.Publish, tick.Options{Interval: tickInterval, Logger: slog.New(slog.DiscardHandler)})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		srv.Drain(dctx)
		hs.Close()
	})
	return "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws"
}
