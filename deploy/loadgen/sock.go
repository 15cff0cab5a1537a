package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgw/wsgw/pkg/protocol"
)

// sock is one client socket. Only its reader goroutine touches it until the run has waited
// for that goroutine, so its counters need no locks.
type sock struct {
	c   *websocket.Conn
	buf []byte // reused for every frame: no allocation per tick

	// Ticks whose time is in the window.
	lastSeq           int64
	ticks, gaps, dups int64
	minSeq, maxSeq    int64

	fib *fibSock // fib mode only
}

// next reads one frame into s.buf. The slice is valid until the next call.
func (s *sock) next(ctx context.Context) (websocket.MessageType, []byte, error) {
	typ, r, err := s.c.Reader(ctx)
	if err != nil {
		return 0, nil, err
	}
	b := s.buf[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			s.buf = b
			return typ, b, nil
		}
		if err != nil {
			s.buf = b
			return 0, nil, err
		}
	}
}

// isTime reports whether frame is a time frame in the gateway's encoding, cheaply, so the
// fib reader skips ticks without a JSON decode.
func isTime(frame []byte) bool {
	return bytes.HasPrefix(frame, []byte(`{"type":"time",`))
}

// onTick accounts a time frame received at now. It returns an error for a frame that is not
// a well-formed tick.
func (s *sock) onTick(frame []byte, now time.Time, r *run) error {
	seq, err := protocol.TickSeqOf(frame)
	if err != nil {
		return err
	}
	r.delivered.Add(1)
	at, ok := tickTimeFast(frame)
	if !ok {
		f, err := protocol.Decode(frame)
		if err != nil {
			return err
		}
		if at, err = protocol.ParseTickTime(f.Time); err != nil {
			return err
		}
	}
	last := s.lastSeq
	s.lastSeq = max(seq, last)
	if !r.inWindow(at) {
		return nil
	}
	switch {
	case last != 0 && seq <= last:
		s.dups++
		return nil
	case last != 0 && seq > last+1:
		s.gaps += seq - last - 1
	}
	s.ticks++
	if s.minSeq == 0 || seq < s.minSeq {
		s.minSeq = seq
	}
	s.maxSeq = max(s.maxSeq, seq)
	r.tickLat.Record(now.Sub(at))
	return nil
}

// tickTimeFast parses the time of a frame ending in "time":"2006-01-02T15:04:05.000Z"} (the
// gateway's encoding, protocol.TimeLayout) without allocating. ok is false for any other
// shape; the caller then falls back to protocol.Decode.
func tickTimeFast(frame []byte) (t time.Time, ok bool) {
	const tail = len(`2006-01-02T15:04:05.000Z"}`)
	const key = `"time":"`
	if len(frame) < tail+len(key) {
		return time.Time{}, false
	}
	if string(frame[len(frame)-tail-len(key):len(frame)-tail]) != key {
		return time.Time{}, false
	}
	b := frame[len(frame)-tail : len(frame)-2]
	if b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' || b[19] != '.' || b[23] != 'Z' {
		return time.Time{}, false
	}
	num := func(i, n int) int {
		v := 0
		for _, c := range b[i : i+n] {
			if c < '0' || c > '9' {
				return -1
			}
			v = v*10 + int(c-'0')
		}
		return v
	}
	y, mo, d, h, mi, s, ms := num(0, 4), num(5, 2), num(8, 2), num(11, 2), num(14, 2), num(17, 2), num(20, 3)
	if y < 0 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 || mi < 0 || mi > 59 || s < 0 || s > 60 || ms < 0 {
		return time.Time{}, false
	}
	// time.Date does not allocate for UTC.
	return time.Date(y, time.Month(mo), d, h, mi, s, ms*int(time.Millisecond), time.UTC), true
}

// readLoop is the socket's one reader: it accounts every frame until the connection ends, as a
// tick or, in fib mode, as an answer (onFibFrame, which also sends the next request).
func (r *run) readLoop(ctx context.Context, s *sock) {
	onFrame := r.onTickFrame
	if s.fib != nil {
		defer s.fib.drained.Do(r.fibDrained.Done)
		r.fibOpen(ctx, s)
		onFrame = r.onFibFrame
	}
	for {
		typ, frame, err := s.next(ioCtx)
		if err != nil {
			r.ended(err)
			return
		}
		onFrame(s, typ, frame, time.Now())
	}
}

// onTickFrame accounts a frame read at now by a socket that expects only ticks.
func (r *run) onTickFrame(s *sock, typ websocket.MessageType, frame []byte, now time.Time) {
	if typ != websocket.MessageText || !isTime(frame) {
		r.countBad(fmt.Sprintf("unexpected frame %.40q", frame))
		return
	}
	if err := s.onTick(frame, now, r); err != nil {
		r.countBad(err.Error())
	}
}

// ended records why a socket's reader stopped; a socket that ends before the run closes it
// is a drop, counted by close code.
func (r *run) ended(err error) {
	if r.closing.Load() {
		return
	}
	code := "error"
	if st := websocket.CloseStatus(err); st != -1 {
		code = fmt.Sprint(int(st))
	} else if strings.Contains(err.Error(), "EOF") { // io.EOF or a wrapped unexpected EOF
		code = "eof"
	}
	r.mu.Lock()
	r.dropped[code]++
	r.mu.Unlock()
}

// countBad records a frame the generator did not expect (kept apart from failures, capped).
func (r *run) countBad(what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.bad) < 20 {
		r.bad[what]++
	} else {
		r.bad["other"]++
	}
}
