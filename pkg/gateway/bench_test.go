package gateway

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/fib"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// BenchmarkTickFanout: one tick from the broker to N real WebSocket clients over loopback,
// until every client has read it. Client and server share the 2 cores, so this is an upper
// bound of the server's cost.
func BenchmarkTickFanout(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) {
			g := startGateway(b, Options{}, 0)
			var wg sync.WaitGroup
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			got := make(chan struct{}, n)
			for i := range n {
				c, _ := g.dial(b, fmt.Sprintf("b%d", i))
				wg.Go(func() {
					for {
						if _, _, err := c.Read(ctx); err != nil {
							return
						}
						got <- struct{}{}
					}
				})
			}
			// A welcome is written before its connection joins the hub (so it is the first
			// frame): wait until all n are in, or the first tick could miss one and this would
			// wait for it forever.
			testkit.Eventually(b, 10*time.Second, "every connection in the hub", func() bool { return g.srv.hub.Len() == n })
			b.ResetTimer()
			for i := range b.N {
				if err := g.broker.Publish(ctx, protocol.TimeFrame(int64(i+1), time.Second)); err != nil {
					b.Fatal(err)
				}
				for range n {
					<-got
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n)/1000, "µs/delivery")
			cancel()
			for _, c := range g.srv.snapshot() {
				c.ws.CloseNow()
			}
			wg.Wait()
		})
	}
}

// BenchmarkFibSmall: a JSON request for n ≤ 93 through parse, table and encode, the
// per-frame cost of the read loop.
func BenchmarkFibSmall(b *testing.B) {
	b.ReportAllocs()
	for range b.N {
		req, perr := protocol.ParseRequest([]byte(`{"type":"fib","n":90,"id":"r1"}`), false, protocol.DefaultMaxN)
		if perr != nil {
			b.Fatal(perr)
		}
		_ = protocol.EncodeFib(req.ID, req.N, fib.Decimal(req.N))
	}
}
