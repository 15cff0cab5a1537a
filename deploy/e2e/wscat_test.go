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

	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// TestWscatFibAndPresence is the README's first steps with the real tools: wscat through
// HAProxy gets F(10) = 55, and redis-cli HGETALL ws:presence lists the connection while it is
// open; once wscat exits the entry goes.
func TestWscatFibAndPresence(t *testing.T) {
	wscat := testkit.Need(t, "wscat")
	redisCLI := testkit.Need(t, "redis-cli")
	c := startCluster(t)
	_, redisPort, _ := strings.Cut(c.RedisAddr, ":")

	start := time.Now()
	out, exited := startWscat(t, wscat, "-c", "ws://"+c.LBAddr+"/ws?user=w", "-x", "10", "-w", "2")

	var welcome protocol.Frame
	err := waitFor(15*time.Second, 20*time.Millisecond, func() error {
		var fib bool
		for _, f := range jsonFrames(out.String()) {
			switch f.Type {
			case protocol.TypeWelcome:
				welcome = f
			case protocol.TypeFib:
				fib = f.N == 10 && f.Result == "55"
			}
		}
		if welcome.ConnID == "" || !fib {
			return errors.New("no welcome and F(10) = 55 yet")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("wscat: %v; output:\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), `"result":"55"`) {
		t.Errorf("wscat output lacks \"result\":\"55\":\n%s", out.String())
	}
	measure(t, "wscat_fib", "welcome and F(10) in %v after starting wscat", time.Since(start).Round(time.Millisecond))
	if welcome.User != "w" {
		t.Errorf("welcome user = %q, want w", welcome.User)
	}

	// While wscat waits its 2 s, the real redis-cli lists the connection.
	var listed protocol.Presence
	err = waitFor(5*time.Second, 50*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		b, err := exec.CommandContext(ctx, redisCLI, "-p", redisPort, "HGETALL", "ws:presence").CombinedOutput()
		if err != nil {
			return fmt.Errorf("redis-cli: %v: %s", err, b)
		}
		select {
		case <-exited:
			return errors.New("wscat exited before redis-cli listed its connection")
		default:
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
	if err != nil {
		t.Fatal(err)
	}
	if listed.User != "w" || listed.Gateway != welcome.Gateway {
		t.Errorf("presence = %+v, want user w on %s", listed, welcome.Gateway)
	}

	// wscat leaves after its 2 s; the gateway deletes the field.
	select {
	case err := <-exited:
		exited <- err
		measure(t, "wscat_exit", "wscat exited %v after start (err %v)", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(15 * time.Second):
		t.Fatalf("wscat still running after 15 s; output:\n%s", out.String())
	}
	gone := time.Now()
	err = waitFor(10*time.Second, 50*time.Millisecond, func() error {
		b, err := exec.Command(redisCLI, "-p", redisPort, "HLEN", "ws:presence").Output()
		if err != nil {
			return err
		}
		if n, _ := strconv.Atoi(strings.TrimSpace(string(b))); n != 0 {
			return fmt.Errorf("HLEN ws:presence = %d, want 0", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	measure(t, "client_close_presence", "field removed %v after wscat exited", time.Since(gone).Round(time.Millisecond))
}

// jsonFrames decodes every line of wscat's output that holds a server frame ("< {...}").
// startWscat runs wscat with args until it exits or the test ends (then it is killed), and
// returns its combined output and a channel receiving its exit (put it back after reading, for
// the cleanup).
func startWscat(t *testing.T, wscat string, args ...string) (*testkit.SyncBuffer, chan error) {
	t.Helper()
	// wscat exits as soon as its stdin reaches EOF, before even connecting: give it a pipe that
	// stays open until the end of the test.
	stdin, keepOpen, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { keepOpen.Close() })
	var out testkit.SyncBuffer
	cmd := exec.Command(wscat, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	return &out, exited
}

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
