package admission

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wsgw/wsgw/internal/testkit"
)

// fakeListener returns the errors of script in order (nil: a connection), then net.ErrClosed.
type fakeListener struct {
	mu     sync.Mutex
	script []error
}

func (f *fakeListener) Accept() (net.Conn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.script) == 0 {
		return nil, net.ErrClosed
	}
	err := f.script[0]
	f.script = f.script[1:]
	if err != nil {
		return nil, err
	}
	a, b := net.Pipe()
	b.Close()
	return a, nil
}
func (f *fakeListener) Close() error   { return nil }
func (f *fakeListener) Addr() net.Addr { return &net.TCPAddr{} }

// emfile is what net.TCPListener.Accept returns when the process is out of descriptors.
var emfile = &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}

func logLines(b *testkit.SyncBuffer) []string {
	return strings.Split(strings.TrimSpace(b.String()), "\n")
}

func TestListenerRateLimitsLogs(t *testing.T) {
	var script []error
	for range 500 {
		script = append(script, emfile)
	}
	script = append(script, nil, &net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.ENFILE)}, nil)
	fake := &fakeListener{script: script}
	now := time.Unix(1000, 0)
	var logs testkit.SyncBuffer
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "accept_errors_total"}, []string{"class"})
	ln := Listener(fake, ListenerOptions{
		Log:    slog.New(slog.NewTextHandler(&logs, nil)),
		Errors: errs,
		// Every accept takes 100 ms of fake time: 500 errors span 50 s.
		Now: func() time.Time { now = now.Add(100 * time.Millisecond); return now },
	})
	var accepted int
	for {
		c, err := ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			break
		}
		if err == nil {
			accepted++
			c.Close()
			continue
		}
		if !errors.Is(err, syscall.EMFILE) && !errors.Is(err, syscall.ENFILE) {
			t.Fatalf("error changed on the way: %v", err)
		}
		var ne net.Error
		if !errors.As(err, &ne) {
			t.Fatalf("%v is no longer a net.Error (net/http would stop backing off)", err)
		}
	}
	if accepted != 2 {
		t.Fatalf("accepted %d, want 2", accepted)
	}
	if got := testutil.ToFloat64(errs.WithLabelValues(AcceptEMFILE)); got != 500 {
		t.Errorf("emfile counted %v, want 500", got)
	}
	if got := testutil.ToFloat64(errs.WithLabelValues(AcceptENFILE)); got != 1 {
		t.Errorf("enfile counted %v, want 1", got)
	}
	lines := logLines(&logs)
	// 50 s of errors, one line per 10 s: 5; the ENFILE and the recovery come within 10 s of the
	// last line, so they wait (the suppressed count carries them).
	warns := 0
	for _, l := range lines {
		if strings.Contains(l, "level=WARN") && strings.Contains(l, "accept failed") {
			warns++
			if !strings.Contains(l, "too many open files") || !strings.Contains(l, "class=emfile") {
				t.Errorf("line lacks the error: %s", l)
			}
		}
	}
	if warns != 5 {
		t.Errorf("%d warn lines for 500 errors over 50 s, want 5:\n%s", warns, strings.Join(lines, "\n"))
	}
	if !strings.Contains(lines[1], "suppressed=99") {
		t.Errorf("second line should count the 99 errors not logged: %s", lines[1])
	}
}

func TestListenerLogsRecovery(t *testing.T) {
	fake := &fakeListener{script: []error{emfile, emfile, emfile, nil, nil}}
	now := time.Unix(1000, 0)
	step := time.Second
	var logs testkit.SyncBuffer
	ln := Listener(fake, ListenerOptions{
		Log: slog.New(slog.NewTextHandler(&logs, nil)),
		Now: func() time.Time { now = now.Add(step); return now },
	})
	for range 3 {
		if _, err := ln.Accept(); err == nil {
			t.Fatal("want an error")
		}
	}
	if c, err := ln.Accept(); err != nil { // 1 s after the last line: not reported yet
		t.Fatal(err)
	} else {
		c.Close()
	}
	step = LogEvery
	if c, err := ln.Accept(); err != nil {
		t.Fatal(err)
	} else {
		c.Close()
	}
	lines := logLines(&logs)
	if len(lines) != 2 || !strings.Contains(lines[1], "accepting again") || !strings.Contains(lines[1], "failed=3") || !strings.Contains(lines[1], "suppressed=2") {
		t.Fatalf("want one warn line and one recovery line with the counts, got:\n%s", strings.Join(lines, "\n"))
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("closed listener: %v", err)
	}
	if n := len(logLines(&logs)); n != 2 {
		t.Errorf("a closed listener was logged")
	}
}
