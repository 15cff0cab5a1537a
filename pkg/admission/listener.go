package admission

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// LogEvery is how often Listener logs accept errors at most.
const LogEvery = 10 * time.Second

// Accept error classes: the label of accept_errors_total.
const (
	AcceptEMFILE = "emfile" // this process is out of file descriptors
	AcceptENFILE = "enfile" // the whole system is
	AcceptOther  = "other"
)

// ListenerOptions configure Listener.
type ListenerOptions struct {
	Log    *slog.Logger
	Errors *prometheus.CounterVec // counted per error, labelled AcceptEMFILE, AcceptENFILE or AcceptOther; nil: not counted
	Now    func() time.Time       // the clock of the rate limit. Defaults to time.Now.
}

// Listener wraps ln so that its accept errors are counted and logged at warn level, at most one
// line per LogEvery with the number of errors not logged since the last line, and one line
// when accepting works again. Running out of descriptors is otherwise silent: net/http's Serve
// retries temporary accept errors with a back-off and says nothing above debug level.
//
// Errors are returned unchanged, so Serve still sees them as temporary and backs off; the error
// of a closed listener is neither counted nor logged.
func Listener(ln net.Listener, o ListenerOptions) net.Listener {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &listener{Listener: ln, o: o}
}

// listener is Listener's wrapper.
//
// Concurrency: Accept may be called from several goroutines. The success path reads one atomic
// flag; the error path and the first success after errors take mu.
type listener struct {
	net.Listener
	o ListenerOptions

	failing atomic.Bool // errors happened that no "accepting again" line has reported yet

	mu         sync.Mutex
	lastLog    time.Time
	suppressed int // errors since the last line
	streak     int // errors since accepting last worked and was reported
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		if !errors.Is(err, net.ErrClosed) {
			l.failed(err)
		}
		return c, err
	}
	if l.failing.Load() {
		l.recovered()
	}
	return c, nil
}

func (l *listener) failed(err error) {
	class := AcceptOther
	switch {
	case errors.Is(err, syscall.EMFILE):
		class = AcceptEMFILE
	case errors.Is(err, syscall.ENFILE):
		class = AcceptENFILE
	}
	if l.o.Errors != nil {
		l.o.Errors.WithLabelValues(class).Inc()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failing.Store(true)
	l.streak++
	now := l.o.Now()
	if !l.lastLog.IsZero() && now.Sub(l.lastLog) < LogEvery {
		l.suppressed++
		return
	}
	l.o.Log.Warn("accept failed; new connections wait in the kernel's backlog", "err", err, "class", class,
		"suppressed", l.suppressed, "failed_in_a_row", l.streak)
	l.lastLog, l.suppressed = now, 0
}

// recovered logs that accepting works again, unless a line was written less than LogEvery
// ago: the flag then stays set and a later success reports it, so a limit reached over and
// over (one descriptor freed, the next accept fails) costs one line per LogEvery.
func (l *listener) recovered() {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.o.Now()
	if !l.failing.Load() || now.Sub(l.lastLog) < LogEvery {
		return
	}
	l.o.Log.Info("accepting again", "failed", l.streak, "suppressed", l.suppressed)
	l.failing.Store(false)
	l.lastLog, l.suppressed, l.streak = now, 0, 0
}
