package termclient

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wsgw/wsgw/internal/testkit"
)

// TestTypedLineSurvivesTicks runs the real binary in a tmux pane (a real pty, so raw mode and
// term.Terminal are exercised) against a gateway ticking every 100 ms, types half a request, and
// checks that the ticks scroll above the prompt while the typed text stays intact.
func TestTypedLineSurvivesTicks(t *testing.T) {
	tmux := testkit.Need(t, "tmux")
	goTool := testkit.Need(t, "go")
	if testing.Short() {
		t.Skip("builds the client binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "client")
	build := exec.Command(goTool, "build", "-o", bin, "github.com/wsgw/wsgw/client")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	g := newFakeGateway(t, func(g *fakeGateway) { g.tick = 100 * time.Millisecond })

	// remain-on-exit keeps the pane (and its exit status) after the client ends.
	conf := filepath.Join(dir, "tmux.conf")
	if err := os.WriteFile(conf, []byte("set -g remain-on-exit on\nset -g history-limit 100\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := fmt.Sprintf("termclient-%d-%d", os.Getpid(), time.Now().UnixNano())
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(tmux, append([]string{"-L", sock, "-f", conf}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	// The shell, not tmux, records the exit status: tmux 3.3 was seen leaving the exited client
	// unreaped (a zombie, no #{pane_dead_status}) for seconds under load.
	statusFile := filepath.Join(dir, "status")
	run("new-session", "-d", "-x", "120", "-y", "30", bin+" -url "+g.url()+" -user tty; echo $? > "+statusFile)
	t.Cleanup(func() { _ = exec.Command(tmux, "-L", sock, "kill-server").Run() })

	screen := func() []string {
		lines := strings.Split(strings.TrimRight(run("capture-pane", "-p"), "\n"), "\n")
		for len(lines) > 0 && strings.TrimSpace(lines[len(lines)-1]) == "" {
			lines = lines[:len(lines)-1]
		}
		return lines
	}
	waitFor(t, 10*time.Second, "the welcome on screen", func() bool {
		return strings.Contains(strings.Join(screen(), "\n"), "connected to gw-test as tty")
	})

	for _, key := range []string{"1", "2"} {
		run("send-keys", "-l", key)
		time.Sleep(250 * time.Millisecond) // ticks arrive between the keys
	}
	time.Sleep(600 * time.Millisecond) // several more ticks while "12" waits on the prompt

	lines := screen()
	if last := lines[len(lines)-1]; last != "> 12" {
		t.Errorf("last line = %q, want the prompt with the typed text %q\n%s", last, "> 12", strings.Join(lines, "\n"))
	}
	tick := regexp.MustCompile(`^\d\d:\d\d:\d\d  tick \d+$`)
	ticks := 0
	for _, l := range lines[:len(lines)-1] {
		switch {
		case tick.MatchString(l):
			ticks++
		case strings.HasPrefix(l, "connected to "):
		default:
			t.Errorf("garbled line %q on screen:\n%s", l, strings.Join(lines, "\n"))
		}
	}
	if ticks < 5 {
		t.Errorf("only %d tick lines above the prompt, want several:\n%s", ticks, strings.Join(lines, "\n"))
	}

	run("send-keys", "-l", "3")
	run("send-keys", "Enter")
	want := "F(123) = " + testkit.Fib(123).String()
	waitFor(t, 10*time.Second, want+" on screen", func() bool {
		return strings.Contains(strings.Join(screen(), "\n"), want)
	})

	// Ctrl-C arrives as a key in raw mode; it must end the client cleanly (exit status 0).
	run("send-keys", "C-c")
	var status string
	waitFor(t, 10*time.Second, "the client to exit", func() bool {
		b, _ := os.ReadFile(statusFile)
		status = strings.TrimSpace(string(b))
		return status != ""
	}, func() string { return strings.Join(screen(), "\n") })
	if status != "0" {
		t.Errorf("client exit status %s after Ctrl-C, want 0\n%s", status, strings.Join(screen(), "\n"))
	}
}
