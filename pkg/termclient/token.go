package termclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgw/wsgw/pkg/protocol"
)

// tokenCmdTimeout bounds one run of -token-cmd.
const tokenCmdTimeout = 10 * time.Second

// tokens holds the session's bearer token (authentication on) and renews it with -token-cmd.
//
// Concurrency: the reader goroutine schedules renewals, the timer's goroutine runs the command
// and sends the refresh, the loop's goroutine reads the token to dial; mu guards all of it.
type tokens struct {
	cmd string // shell command printing a fresh token; empty: the token cannot be renewed

	mu    sync.Mutex
	token string
	timer *time.Timer // the pending in-band renewal of the current connection
}

// header is the Authorization header carrying the token; nil when there is none.
func (tk *tokens) header() http.Header {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	if tk.token == "" {
		return nil
	}
	return http.Header{"Authorization": {"Bearer " + tk.token}}
}

// fetch runs -token-cmd and keeps what it prints as the token.
func (tk *tokens) fetch(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, tokenCmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "sh", "-c", tk.cmd).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && len(ee.Stderr) > 0 {
			err = fmt.Errorf("%w: %s", err, truncate(strings.TrimSpace(string(ee.Stderr)), 200))
		}
		return "", fmt.Errorf("-token-cmd %q: %w", tk.cmd, err)
	}
	tok := strings.TrimSpace(string(out))
	if tok == "" || strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("-token-cmd %q printed no single token", tk.cmd)
	}
	tk.mu.Lock()
	tk.token = tok
	tk.mu.Unlock()
	return tok, nil
}

// renewAt is when to renew a token expiring at exp, seen at now: three quarters into its
// remaining life, at least 2 s before exp, never in the past.
func renewAt(now, exp time.Time) time.Duration {
	left := exp.Sub(now)
	d := min(left*3/4, left-2*time.Second)
	return max(d, 0)
}

// schedule arms the in-band renewal of conn's token expiring at exp (Unix seconds), when a
// command can renew it. The printer reports what happens.
func (tk *tokens) schedule(ctx context.Context, conn *websocket.Conn, exp int64, out *printer) {
	if tk.cmd == "" || exp <= 0 {
		return
	}
	tk.mu.Lock()
	defer tk.mu.Unlock()
	if tk.timer != nil {
		tk.timer.Stop()
	}
	tk.timer = time.AfterFunc(renewAt(time.Now(), time.Unix(exp, 0)), func() {
		tok, err := tk.fetch(ctx)
		if err != nil {
			out.Statusf("token not renewed: %v", err)
			return
		}
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
		defer cancel()
		if err := conn.Write(wctx, websocket.MessageText, protocol.EncodeRefresh(tok)); err != nil {
			out.Statusf("token not renewed: %v", rootCause(err))
		}
	})
}

// stop cancels a pending renewal (the connection ended).
func (tk *tokens) stop() {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	if tk.timer != nil {
		tk.timer.Stop()
		tk.timer = nil
	}
}
