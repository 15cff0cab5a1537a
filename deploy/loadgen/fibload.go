package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"math/big"
	"math/bits"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgw/wsgw/pkg/protocol"
)

// fibRequest is the client → server Fibonacci request of PROTOCOL.md. pkg/protocol has the
// server side of the exchange only (ParseRequest, EncodeFib), so the request is encoded here
// with encoding/json, never by hand.
type fibRequest struct {
	Type string `json:"type"`
	N    int    `json:"n"`
	ID   string `json:"id"`
}

// pending is one request waiting for its answer.
type pending struct {
	id   uint64
	n    int
	sent time.Time
}

// fibSock is the fib-mode state of one socket, touched by its reader goroutine only.
type fibSock struct {
	nextID  uint64
	out     []pending // outstanding, at most Pipeline; searched linearly
	enc     *json.Encoder
	encBuf  bytes.Buffer
	idBuf   []byte
	drained sync.Once
}

// fibOpen waits for the window to open, then sends Pipeline requests. From then on the
// socket's reader keeps them outstanding: each answer sends the next request (onFibFrame), so
// a socket costs one goroutine.
func (r *run) fibOpen(ctx context.Context, s *sock) {
	s.fib.enc = json.NewEncoder(&s.fib.encBuf)
	select {
	case <-r.fibStart:
		for range r.cfg.Pipeline {
			r.fibSend(s)
		}
	case <-ctx.Done():
	}
}

// onFibFrame accounts a frame read at now by a fib-mode socket (ticks are ignored) and sends
// the next request.
func (r *run) onFibFrame(s *sock, typ websocket.MessageType, frame []byte, now time.Time) {
	f := s.fib
	if typ == websocket.MessageText && isTime(frame) {
		return
	}
	fr, err := protocol.Decode(frame)
	if err != nil {
		r.countBad(err.Error())
		return
	}
	switch fr.Type {
	case protocol.TypeFib:
		r.fibAnswer(s, fr, now)
		if !r.fibStop.Load() {
			r.fibSend(s)
		}
	case protocol.TypeError:
		if _, ok := f.take(fr.ID); !ok && fr.ID != "" {
			r.fibUnmatched.Add(1)
		}
		r.countFibError(fr.Code)
		if fr.Code == protocol.CodeRateLimited || fr.Code == protocol.CodeBusy {
			time.Sleep(r.cfg.RetryAfter) // the gateway asked us to slow down
		}
		if !r.fibStop.Load() {
			r.fibSend(s)
		}
	default:
		r.countBad("unexpected frame type " + fr.Type)
	}
	if r.fibStop.Load() && len(f.out) == 0 {
		f.drained.Do(r.fibDrained.Done)
	}
}

// fibSend sends one request with the next id.
func (r *run) fibSend(s *sock) {
	f := s.fib
	n := r.cfg.FibN
	if r.cfg.FibMax > 0 {
		n = rand.IntN(r.cfg.FibMax + 1)
	}
	f.nextID++
	f.idBuf = strconv.AppendUint(f.idBuf[:0], f.nextID, 10)
	f.encBuf.Reset()
	if err := f.enc.Encode(fibRequest{Type: protocol.TypeFib, N: n, ID: string(f.idBuf)}); err != nil {
		r.countBad("encode request: " + err.Error())
		return
	}
	f.out = append(f.out, pending{id: f.nextID, n: n, sent: time.Now()})
	if err := s.c.Write(ioCtx, websocket.MessageText, f.encBuf.Bytes()); err != nil {
		return // the reader sees the connection end
	}
	r.fibSent.Add(1)
}

// take removes and returns the outstanding request with this id.
func (f *fibSock) take(id string) (pending, bool) {
	v, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		return pending{}, false
	}
	for i, p := range f.out {
		if p.id == v {
			f.out = append(f.out[:i], f.out[i+1:]...)
			return p, true
		}
	}
	return pending{}, false
}

// fibAnswer checks one answer against its request and, for a sample, against math/big.
func (r *run) fibAnswer(s *sock, fr protocol.Frame, now time.Time) {
	p, ok := s.fib.take(fr.ID)
	if !ok {
		r.fibUnmatched.Add(1)
		return
	}
	r.rtt.Record(now.Sub(p.sent))
	if fr.N != p.n {
		r.fibMismatch.Add(1)
		return
	}
	k := r.fibOK.Add(1)
	if r.inWindow(now) {
		r.fibOKWindow.Add(1)
	}
	var want string
	switch {
	case r.cfg.FibMax == 0:
		want = r.fibFixed // fixed n: comparing every answer is one string compare
	case k%int64(r.cfg.VerifyEvery) == 0:
		want = fibDecimal(p.n)
	default:
		return
	}
	r.fibVerified.Add(1)
	if fr.Result != want {
		r.fibMismatch.Add(1)
	}
}

func (r *run) countFibError(code string) {
	r.mu.Lock()
	r.fibErrors[code]++
	r.mu.Unlock()
}

// fibDecimal computes F(n) in decimal with math/big by fast doubling, independently of
// pkg/fib, so the check does not share the gateway's bugs.
func fibDecimal(n int) string {
	a, b := big.NewInt(0), big.NewInt(1) // F(k), F(k+1) with k = 0
	t1, t2 := new(big.Int), new(big.Int)
	for i := bits.Len(uint(n)) - 1; i >= 0; i-- {
		// F(2k) = F(k)·(2F(k+1) − F(k)); F(2k+1) = F(k)² + F(k+1)².
		t1.Lsh(b, 1).Sub(t1, a).Mul(t1, a)
		t2.Mul(a, a)
		b.Mul(b, b).Add(b, t2)
		a, t1 = t1, a
		if n>>uint(i)&1 == 1 {
			a.Add(a, b)
			a, b = b, a
		}
	}
	return a.String()
}
