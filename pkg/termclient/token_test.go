package termclient

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsgw/wsgw/internal/testkit/standalone"
	"github.com/wsgw/wsgw/pkg/auth"
	"github.com/wsgw/wsgw/pkg/broker"
	"github.com/wsgw/wsgw/pkg/gateway"
	"github.com/wsgw/wsgw/pkg/metrics"
	"github.com/wsgw/wsgw/pkg/presence"
)

var tokenSecret = []byte("termclient-test-secret-32-bytes!")

// authGateway is a real gateway with authentication on (HS256 with tokenSecret); it returns
// its ws:// URL.
func authGateway(t *testing.T) string {
	t.Helper()
	v, err := auth.New(auth.Options{Secret: tokenSecret, Leeway: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close) // after the gateway's drain
	srv := gateway.NewServer(slog.New(slog.DiscardHandler), metrics.New(), broker.NewMemory(), presence.NewMemory(), gateway.Options{Auth: v})
	return standalone.Serve(t, srv)
}

func signFor(t *testing.T, user string, ttl time.Duration) string {
	t.Helper()
	tok, err := auth.Sign(tokenSecret, auth.TokenSpec{User: user, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestTokenExpiredSaysSo: without a way to renew, a 4001 ends the client with a message that
// names the cause.
func TestTokenExpiredSaysSo(t *testing.T) {
	url := authGateway(t)
	r := start(t, "-url", url, "-token", signFor(t, "ana", 2*time.Second))
	err := r.wait(t, 15*time.Second)
	if err == nil || !strings.Contains(err.Error(), "token expired (4001)") || !strings.Contains(r.stdout.String(), "token expires") {
		t.Fatalf("Run = %v; stdout:\n%s", err, r.stdout)
	}
	r2 := start(t, "-url", url)
	if err := r2.wait(t, 10*time.Second); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("no token: Run = %v", err)
	}
}

// TestTokenCmdRefreshes: with -token-cmd the client gets its first token from the command and
// renews it in-band before each expiry, so the connection outlives several short tokens.
func TestTokenCmdRefreshes(t *testing.T) {
	url := authGateway(t)
	file := filepath.Join(t.TempDir(), "token")
	write := func() {
		if err := os.WriteFile(file, []byte(signFor(t, "ana", 3*time.Second)+"\n"), 0o600); err != nil {
			t.Error(err)
		}
	}
	write()
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() { // an identity provider that always has a fresh token
		defer close(stopped)
		for {
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
				write()
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-stopped }) // before TempDir's removal, registered earlier
	r := start(t, "-url", url, "-token-cmd", "cat "+file)
	waitFor(t, 10*time.Second, "the welcome", func() bool { return strings.Contains(r.stdout.String(), "connected to gw as ana") })
	waitFor(t, 15*time.Second, "two refreshes", func() bool { return strings.Count(r.stdout.String(), "token refreshed") >= 2 },
		func() string { return "stdout:\n" + r.stdout.String() + "\nstderr:\n" + r.stderr.String() })
	if strings.Count(r.stdout.String(), "connected to") != 1 || strings.Contains(r.stderr.String(), "4001") {
		t.Fatalf("the connection did not survive its tokens:\nstdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	}
	r.typeLine(t, "10")
	waitFor(t, 5*time.Second, "F(10)", func() bool { return strings.Contains(r.stdout.String(), "F(10) = 55") })
}

func TestRenewAt(t *testing.T) {
	now := time.Unix(1000, 0)
	for exp, want := range map[int64]time.Duration{1100: 75 * time.Second, 1004: 2 * time.Second, 1001: 0, 900: 0} {
		if got := renewAt(now, time.Unix(exp, 0)); got != want {
			t.Errorf("renewAt(exp %d) = %v, want %v", exp, got, want)
		}
	}
}
