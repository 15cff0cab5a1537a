package termclient

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/wsgw/wsgw/pkg/protocol"
)

// printer is the single way anything reaches the screen. Frames, status lines and the prompt
// all go through it so that lines never interleave: the socket reader, the input goroutine and
// the reconnect loop all print.
//
// In terminal mode out and status are the same *term.Terminal, whose Write clears the prompt and
// the partial input, prints the line, and redraws them. In plain mode (stdin or stdout is not a
// terminal) frames go to stdout and status lines to stderr, so `client | grep F` stays clean.
type printer struct {
	mu     sync.Mutex
	out    io.Writer
	status io.Writer
}

// Line prints one received frame's text. Write errors are ignored on purpose: a closed stdout
// (client | head) must not stop the client from answering the server's close handshake.
func (p *printer) Line(s string) {
	p.write(p.out, s)
}

// Statusf prints a line about the client itself (disconnects, dropped input).
func (p *printer) Statusf(format string, args ...any) {
	p.write(p.status, fmt.Sprintf(format, args...))
}

func (p *printer) write(w io.Writer, s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, _ = io.WriteString(w, s+"\n")
}

// formatFrame renders a server frame as one readable line (a fib answer of any size is printed
// whole). The tick's time is shown in local time because that is what a person at a terminal
// reads; seq is shown as is, so gaps (missed ticks) stay visible.
func formatFrame(f protocol.Frame, raw []byte) string {
	switch f.Type {
	case protocol.TypeWelcome:
		if f.Exp > 0 {
			return fmt.Sprintf("connected to %s as %s (conn %s), token expires %s", f.Gateway, f.User, f.ConnID, time.Unix(f.Exp, 0).Local().Format(time.TimeOnly))
		}
		return fmt.Sprintf("connected to %s as %s (conn %s)", f.Gateway, f.User, f.ConnID)
	case protocol.TypeRefreshed:
		return "token refreshed, expires " + time.Unix(f.Exp, 0).Local().Format(time.TimeOnly)
	case protocol.TypeTime:
		t, err := protocol.ParseTickTime(f.Time)
		if err != nil {
			return fmt.Sprintf("tick %d (unreadable time %q)", f.Seq, f.Time)
		}
		return t.Local().Format(time.TimeOnly) + "  tick " + fmt.Sprint(f.Seq)
	case protocol.TypeFib:
		var b strings.Builder
		b.Grow(len(f.Result) + 32)
		fmt.Fprintf(&b, "F(%d) = %s", f.N, f.Result)
		if f.ID != "" {
			fmt.Fprintf(&b, " (id %s)", f.ID)
		}
		return b.String()
	case protocol.TypeError:
		if f.ID != "" {
			return fmt.Sprintf("error (%s, id %s): %s", f.Code, f.ID, f.Message)
		}
		return fmt.Sprintf("error (%s): %s", f.Code, f.Message)
	}
	return fmt.Sprintf("unknown frame %q: %s", f.Type, truncate(string(raw), 200))
}

// formatDuration prints a wait like "2.3s": precise enough for a person, short enough for a
// status line.
func formatDuration(d time.Duration) string {
	return fmt.Sprintf("%.1fs", d.Seconds())
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
