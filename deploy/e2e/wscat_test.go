package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsgw/wsgw/deploy/localcluster"
	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// TestWscatFibAndPresence is the README's first steps with the real tools: wscat through
// HAProxy gets F(10) = 55, and redis-cli HGETALL ws:presence lists the connection while it is
// open; once wscat exits the entry goes.
func TestWscatFibAndPresence(t *testing.T) {
	wscat := testkit.Need(t, "wscat")
	redisCLI := testkit.Need(t, "redis-cli")
	c := startCluster(t, localcluster.Options{})
	_, redisPort, _ := strings.Cut(c.RedisAddr, ":")

	start := time.Now()
	output, p := startWscat(t, wscat, "-c", "ws://"+c.LBAddr+"/ws?user=w", "-x", "10", "-w", "2")

	var welcome protocol.Frame
	waitFor(t, 15*time.Second, "wscat: a welcome and F(10) = 55", func() error {
		var fib bool
		for _, f := range jsonFrames(output()) {
			switch f.Type {
			case protocol.TypeWelcome:
				welcome = f
			case protocol.TypeFib:
				fib = f.N == 10 && f.Result == "55"
			}
		}
		if welcome.ConnID == "" || !fib {
			return errors.New("not in its output yet")
		}
		return nil
	})
	if !strings.Contains(output(), `"result":"55"`) {
		t.Errorf("wscat output lacks \"result\":\"55\":\n%s", output())
	}
	measure(t, "wscat_fib", "welcome and F(10) in %v after starting wscat", time.Since(start).Round(time.Millisecond))
	if welcome.User != "w" {
		t.Errorf("welcome user = %q, want w", welcome.User)
	}

	// While wscat waits its 2 s, the real redis-cli lists the connection.
	var listed protocol.Presence
	waitFor(t, 5*time.Second, "redis-cli HGETALL ws:presence lists the connection", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		b, err := exec.CommandContext(ctx, redisCLI, "-p", redisPort, "HGETALL", "ws:presence").CombinedOutput()
		if err != nil {
			return fmt.Errorf("redis-cli: %v: %s", err, b)
		}
		if !p.Running() {
			return fmt.Errorf("%w: wscat exited before redis-cli listed its connection", errStop)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		for i := 0; i+1 < len(lines); i += 2 {
			if strings.TrimSpace(lines[i]) != welcome.ConnID {
				continue
			}
			v := strings.TrimSpace(lines[i+1])
			if !strings.Contains(v, `"user":"w"`) {
				return fmt.Errorf("presence value %s lacks \"user\":\"w\"", v)
			}
			return json.Unmarshal([]byte(v), &listed)
		}
		return fmt.Errorf("conn %s not in HGETALL ws:presence:\n%s", welcome.ConnID, b)
	})
	if listed.User != "w" || listed.Gateway != welcome.Gateway {
		t.Errorf("presence = %+v, want user w on %s", listed, welcome.Gateway)
	}

	// wscat leaves after its 2 s; the gateway deletes the field.
	waitFor(t, 15*time.Second, "wscat to exit", func() error {
		if p.Running() {
			return errors.New("still running")
		}
		return nil
	})
	measure(t, "wscat_exit", "wscat exited %v after start (err %v)", time.Since(start).Round(time.Millisecond), p.ExitErr())
	gone := time.Now()
	waitFor(t, 10*time.Second, "HLEN ws:presence = 0 after wscat exited", func() error {
		b, err := exec.Command(redisCLI, "-p", redisPort, "HLEN", "ws:presence").Output()
		if err != nil {
			return err
		}
		if n, _ := strconv.Atoi(strings.TrimSpace(string(b))); n != 0 {
			return fmt.Errorf("HLEN ws:presence = %d, want 0", n)
		}
		return nil
	})
	measure(t, "client_close_presence", "field removed %v after wscat exited", time.Since(gone).Round(time.Millisecond))
}

// jsonFrames decodes every line of wscat's output that holds a server frame ("< {...}").
func jsonFrames(out string) []protocol.Frame {
	var fs []protocol.Frame
	for _, line := range strings.Split(out, "\n") {
		i, j := strings.IndexByte(line, '{'), strings.LastIndexByte(line, '}')
		if i < 0 || j < i {
			continue
		}
		if f, err := protocol.Decode([]byte(line[i : j+1])); err == nil {
			fs = append(fs, f)
		}
	}
	return fs
}

// startWscat runs wscat with args through startInteractive and returns a reader of what it
// printed.
func startWscat(t *testing.T, wscat string, args ...string) (output func() string, p *localcluster.Proc) {
	t.Helper()
	p = startInteractive(t, "wscat", wscat, args...)
	return func() string { b, _ := os.ReadFile(p.LogPath()); return string(b) }, p
}
