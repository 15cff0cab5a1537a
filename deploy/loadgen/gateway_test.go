package loadgen

import (
	"testing"
	"time"

	"github.com/wsgw/wsgw/internal/testkit/standalone"
	"github.com/wsgw/wsgw/pkg/gateway"
)

// tickInterval makes tests see ten ticks a second instead of one.
const tickInterval = 100 * time.Millisecond

// startGateway runs a standalone gateway with its own ticker on a real loopback socket and
// returns its ws:// URL. Everything stops when the test ends.
func startGateway(t testing.TB, opts gateway.Options) string {
	t.Helper()
	return standalone.Start(t, opts, tickInterval)
}
