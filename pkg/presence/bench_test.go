package presence

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/metrics"
)

// BenchmarkRedisJoinBurst: N connections join at once (a reconnect storm after a gateway
// restart) against a real redis-server; one op is the whole burst, from the first Join to every
// field in the hash. Reports the round trips it took: batching keeps them a handful, never N.
func BenchmarkRedisJoinBurst(b *testing.B) {
	srv := testkit.StartRedis(b)
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("joins=%d", n), func(b *testing.B) {
			c, rt := countedClient(b, srv.Addr())
			check := srv.Client()
			var trips int64
			for i := range b.N {
				prefix := fmt.Sprintf("%sb%d:", testkit.Prefix(b), i)
				s := NewRedis(c, RedisOptions{Prefix: prefix, GatewayID: "gw-bench", TTL: 15 * time.Second,
					Logger: quietLogger(), Metrics: metrics.New()})
				before := rt.RoundTrips()
				start := time.Now()
				for j := range n {
					s.Join(user("gw-bench", j))
				}
				for check.HLen(context.Background(), prefix+"presence").Val() < int64(n) {
					time.Sleep(time.Millisecond)
				}
				b.ReportMetric(float64(time.Since(start).Microseconds())/float64(n), "µs/join")
				trips += rt.RoundTrips() - before
				b.StopTimer()
				_ = s.Close(context.Background())
				b.StartTimer()
			}
			b.ReportMetric(float64(trips)/float64(b.N), "round-trips/burst")
		})
	}
}
