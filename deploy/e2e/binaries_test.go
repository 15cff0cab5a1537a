package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/wsgw/wsgw/deploy/localcluster"
	"github.com/wsgw/wsgw/internal/testkit"
)

// Settings every test runs with, kept short so the package stays fast (PROTOCOL.md defaults
// are 15s, 5s, 10s).
const (
	presenceTTL     = 3 * time.Second
	leaseTTL        = 2 * time.Second
	shutdownTimeout = 5 * time.Second
	tickInterval    = time.Second
)

// baseEnv is passed to every gateway and ticker.
var baseEnv = []string{
	"PRESENCE_TTL=" + presenceTTL.String(),
	"LEASE_TTL=" + leaseTTL.String(),
	"SHUTDOWN_TIMEOUT=" + shutdownTimeout.String(),
	"TICK_INTERVAL=" + tickInterval.String(),
}

var (
	binRoot   string // created by TestMain, removed after the run
	buildOnce sync.Once
	buildErr  error
)

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "clustertest-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "clustertest:", err)
		os.Exit(1)
	}
	binRoot = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// binDir builds gateway, ticker and client once per test binary and returns their directory.
// It skips under -short, and when redis-server is missing (fails under INTEGRATION=required).
func binDir(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("clustertest: end-to-end, skipped with -short")
	}
	testkit.Need(t, "redis-server")
	buildOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		buildErr = localcluster.BuildBinaries(ctx, binRoot)
	})
	if buildErr != nil {
		t.Fatalf("build binaries: %v", buildErr)
	}
	return binRoot
}

// bin is the path of one built program.
func bin(t *testing.T, name string) string { return filepath.Join(binDir(t), name) }
