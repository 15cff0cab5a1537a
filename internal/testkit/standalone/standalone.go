// Package standalone starts an in-process gateway for the tests of the tools under deploy/ and
// of pkg/termclient. It is apart from testkit because it imports pkg/gateway, whose own tests import
// testkit: testkit itself must not import product packages. Nothing here is product code.
package standalone

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

// Start runs a standalone gateway (memory broker and presence) with its own ticker publishing
// every interval, on a real loopback socket, and returns its ws:// URL. Everything stops when
// the test ends.
func Start(t testing.TB, opts gateway.Options, interval time.Duration) string {
	t.Helper()
	b := broker.NewMemory()
	url := Serve(t, gateway.NewServer(slog.New(slog.DiscardHandler), metrics.New(), b, presence.NewMemory(), opts))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = tick.Run(ctx, b.Publish, tick.Options{Interval: interval, Logger: slog.New(slog.DiscardHandler)})
	}()
	t.Cleanup(func() { // before Serve's cleanup: the ticker stops first
		cancel()
		<-done
	})
	return url
}

// Serve starts srv on a real loopback socket and returns its ws:// URL; when the test ends the
// listener closes and srv drains.
func Serve(t testing.TB, srv *gateway.Server) string {
	t.Helper()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Drain(ctx)
	})
	return "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws"
}
