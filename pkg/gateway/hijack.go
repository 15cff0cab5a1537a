package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"time"
)

// Sizes of the buffers a WebSocket keeps for its whole life. net/http hands a hijacked
// connection a 4 KiB reader and a 4 KiB writer: 8 KiB per idle socket, a quarter of its cost.
// Client frames are small (READ_LIMIT defaults to 4 KiB) and server frames are either small
// (ticks, errors) or large enough that bufio writes them straight to the socket, so 512 bytes
// each lose nothing.
const (
	connReadBuf  = 512
	connWriteBuf = 512
)

// hijackWriter wraps the ResponseWriter that websocket.Accept hijacks, to put the gateway's
// own layers under the library: small buffers; on the read side the bytes the client sent
// with its handshake, then the socket, through a frameGuard (1009 at the header); on the
// write side an outbox (a write never waits for the peer). After Accept, out is the outbox.
type hijackWriter struct {
	http.ResponseWriter
	readLimit    int64         // READ_LIMIT, for the frame guard
	writeTimeout time.Duration // the outbox's flush deadline
	outboxLimit  int           // bytes the outbox may keep

	out *outbox // set by Hijack
}

// Unwrap lets http.ResponseController and coder/websocket reach the original writer's other
// interfaces.
func (h *hijackWriter) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// wsConn is the net.Conn the library gets: reads wait while the peer leaves too much unread
// (outbox.waitWritable) and come through the frame guard; Close and the rest go to the
// socket. The library writes only through the bufio.Writer Hijack returns.
type wsConn struct {
	net.Conn
	r   io.Reader
	out *outbox
}

func (c *wsConn) Read(p []byte) (int, error) {
	c.out.waitWritable()
	return c.r.Read(p)
}

// Hijack hijacks the underlying connection and returns it wrapped as described above.
func (h *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("gateway: response writer cannot hijack")
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	// Bytes the client sent right after its handshake are already in net/http's reader: they
	// stay first in line. (The library re-reads what is buffered in the reader returned
	// here, which is nothing, and resets that reader onto the returned conn; so they must be
	// behind the conn, not in a reader the library replaces.)
	var r io.Reader = nc
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		r = io.MultiReader(bytes.NewReader(bytes.Clone(b)), nc)
	}
	h.out = newOutbox(nc, h.writeTimeout, h.outboxLimit)
	wc := &wsConn{Conn: nc, r: &frameGuard{r: r, limit: h.readLimit}, out: h.out}
	return wc, bufio.NewReadWriter(bufio.NewReaderSize(wc, connReadBuf), bufio.NewWriterSize(h.out, connWriteBuf)), nil
}
