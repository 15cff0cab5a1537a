package gateway

import (
	"strings"
	"sync"
	"time"

	"github.com/wsgw/wsgw/pkg/broker"
	"github.com/wsgw/wsgw/pkg/presence"
)

// ReadyCheck is one line of /readyz. It reads state that something else keeps up to date in
// the background (the broker's checker, the presence writer, the drain flag) and never does
// I/O, so /readyz answers at once whatever Redis does. It returns whether the gateway can
// serve as far as this check knows, and its line; an empty line prints nothing.
type ReadyCheck func() (ok bool, line string)

// readiness is the list of checks behind /readyz, in the order their lines print. Adding a
// check is one call to add. Safe for concurrent use.
type readiness struct {
	mu     sync.Mutex
	checks []ReadyCheck
}

func (r *readiness) add(checks ...ReadyCheck) {
	r.mu.Lock()
	r.checks = append(r.checks, checks...)
	r.mu.Unlock()
}

// report runs every check: ok when all are, body with one line per check after a first line
// "ready" or "not ready".
func (r *readiness) report() (ok bool, body string) {
	r.mu.Lock()
	checks := r.checks
	r.mu.Unlock()
	ok = true
	var lines strings.Builder
	for _, c := range checks {
		good, line := c()
		ok = ok && good
		if line != "" {
			lines.WriteString(line)
			lines.WriteByte('\n')
		}
	}
	if ok {
		return true, "ready\n" + lines.String()
	}
	return false, "not ready\n" + lines.String()
}

// drainingCheck fails from the first instant of a drain.
func (s *Server) drainingCheck() (bool, string) {
	if s.draining.Load() {
		return false, "draining"
	}
	return true, ""
}

// brokerChecks report the broker's backing store and subscription (nothing for a broker with
// no store, as in standalone mode), from the state the broker's own checker keeps.
func brokerChecks(b broker.Broker) []ReadyCheck {
	store := func() (bool, string) {
		h := b.Health()
		switch {
		case h.Store == "":
			return true, ""
		case !h.UnreachableSince.IsZero():
			return false, h.Store + " unreachable since " + h.UnreachableSince.UTC().Format(time.RFC3339Nano)
		}
		return true, h.Store + " ok"
	}
	sub := func() (bool, string) {
		h := b.Health()
		switch {
		case h.Store == "":
			return true, ""
		case h.Subscription != "":
			return false, "subscription " + h.Subscription
		}
		return true, "subscription ok"
	}
	return []ReadyCheck{store, sub}
}

// fullCheck fails while the gateway holds MAX_CONNECTIONS sockets, so a load balancer sends new
// clients to the other replicas (docs/PROTOCOL.md, Admission).
func (s *Server) fullCheck() (bool, string) {
	if s.Full() {
		return false, "full"
	}
	return true, ""
}

// presenceCheck shows a streak of failed presence writes. It never fails readiness: when Redis
// refuses writes it refuses them for every gateway at once, and taking them all out of rotation
// would refuse every client while ticks and Fibonacci still work.
func presenceCheck(store any) []ReadyCheck {
	wh, ok := store.(presence.WriteHealth)
	if !ok {
		return nil
	}
	return []ReadyCheck{func() (bool, string) {
		if since := wh.WriteFailingSince(); !since.IsZero() {
			return true, "presence writes failing since " + since.UTC().Format(time.RFC3339Nano)
		}
		return true, ""
	}}
}
