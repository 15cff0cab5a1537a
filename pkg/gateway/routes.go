package gateway

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"strconv"

	"github.com/wsgw/wsgw/pkg/presence"
	"github.com/wsgw/wsgw/pkg/protocol"
)

//go:embed web/index.html
var indexHTML []byte

// appJS is the page's script, served beside it (same origin) at /app.js.
//
//go:embed web/app.js
var appJS []byte

// authMeta is the page's marker of whether the gateway wants a token: pageFor renders it
// "bearer" when authentication is on, and the page then shows its token field and sends the
// token in the wsgw.bearer subprotocol.
const authMeta = `<meta name="wsgw-auth" content="off">`

// pageFor returns the page to serve: the embedded file, with the auth marker on when asked.
func pageFor(authOn bool) []byte {
	if !authOn {
		return indexHTML
	}
	return bytes.Replace(indexHTML, []byte(authMeta), []byte(`<meta name="wsgw-auth" content="bearer">`), 1)
}

// Handler returns the whole HTTP surface of the gateway on one port, as without ADMIN_ADDR:
// the public routes plus /users and /metrics.
func (s *Server) Handler() http.Handler {
	mux := s.publicMux()
	s.operatorRoutes(mux)
	return mux
}

// PublicHandler is the surface of GATEWAY_ADDR when ADMIN_ADDR is set: /ws, the page and the
// health checks only.
func (s *Server) PublicHandler() http.Handler { return s.publicMux() }

// AdminHandler is the surface of ADMIN_ADDR: /users, /metrics, /debug/pprof/ and /healthz.
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	s.operatorRoutes(mux)
	mux.HandleFunc("GET /healthz", s.handleHealthz)
	pprofRoutes(mux)
	return mux
}

func (s *Server) publicMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", s.handleWS)
	mux.HandleFunc("GET /{$}", s.handleIndex)
	mux.HandleFunc("GET /app.js", handleAppJS)
	mux.HandleFunc("GET /healthz", s.handleHealthz)
	mux.HandleFunc("GET /readyz", s.handleReadyz)
	return mux
}

// operatorRoutes are the routes meant for operators, not clients.
func (s *Server) operatorRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /users", s.handleUsers)
	mux.Handle("GET /metrics", s.m.Handler())
}

// pprofRoutes adds net/http/pprof, for the admin and debug listeners only.
func pprofRoutes(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}

func handleAppJS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(appJS)
}

func (s *Server) handleIndex(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	_, _ = w.Write(s.page)
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

// handleUsers serves one page of the online connections (the whole cluster's in cluster
// mode): ?limit=N (default 1000, at most 10000) and ?cursor=C from the previous page's
// next_cursor. A bad limit or cursor is a 400 with the reason.
func (s *Server) handleUsers(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := presence.DefaultPageSize
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > presence.MaxPageSize {
			http.Error(w, fmt.Sprintf("limit must be a whole number from 1 to %d", presence.MaxPageSize), http.StatusBadRequest)
			return
		}
		limit = n
	}
	page, err := s.store.Page(r.Context(), q.Get("cursor"), limit)
	if errors.Is(err, presence.ErrBadCursor) {
		http.Error(w, "cursor must be a next_cursor from an earlier page", http.StatusBadRequest)
		return
	}
	if err != nil {
		s.log.Warn("list users", "err", err)
		http.Error(w, "presence unavailable: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	users := page.Users
	if users == nil {
		users = []protocol.User{}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(protocol.Users{Count: page.Count, DistinctUsers: page.Distinct,
		Users: users, NextCursor: page.NextCursor})
}
