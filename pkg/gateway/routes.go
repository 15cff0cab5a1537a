package gateway

import (
	_ "embed"
	"encoding/json"
	"net/http"

	"github.com/wsgw/wsgw/pkg/protocol"
)

//go:embed web/index.html
var indexHTML []byte

// Handler returns the whole HTTP surface of the gateway.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", s.handleWS)
	mux.HandleFunc("GET /{$}", s.handleIndex)
	mux.HandleFunc("GET /healthz", s.handleHealthz)
	mux.HandleFunc("GET /readyz", s.handleReadyz)
	mux.HandleFunc("GET /users", s.handleUsers)
	mux.Handle("GET /metrics", s.m.Handler())
	return mux
}

func (s *Server) handleIndex(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	_, _ = w.Write(indexHTML)
}

// handleHealthz answers 200 while the process runs.
func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

// handleReadyz answers 200 when every readiness check passes (not draining; in cluster mode
// Redis reachable and the tick subscription delivering), 503 otherwise, with one line per
// check. It reads state kept in the background and does no I/O, so it answers at once.
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	ok, body := s.ready.report()
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = w.Write([]byte(body))
}

// handleUsers lists every online connection (the whole cluster's in cluster mode).
func (s *Server) handleUsers(w http.ResponseWriter, r *http.Request) {
	users, err := s.store.List(r.Context())
	if err != nil {
		s.log.Warn("list users", "err", err)
		http.Error(w, "presence unavailable: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	if users == nil {
		users = []protocol.User{}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(protocol.Users{Count: len(users), Users: users})
}
