package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
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

// hijackWriter wraps the ResponseWriter that websocket.Accept hijacks, for two reasons: to give
// the connection small buffers, and to keep the raw net.Conn so writes can carry a socket
// deadline (cheaper than a context per write, and the same protection).
type hijackWriter struct {
	http.ResponseWriter
	conn net.Conn // set by Hijack
}

// Unwrap lets http.ResponseController and coder/websocket reach the original writer's other
// interfaces.
func (h *hijackWriter) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// Hijack hijacks the underlying connection and returns it with small buffers. Bytes the
// client sent right after its handshake (already in net/http's reader) stay first in line.
func (h *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("gateway: response writer cannot hijack")
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	var r io.Reader = nc
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		r = io.MultiReader(bytes.NewReader(bytes.Clone(b)), nc)
	}
	h.conn = nc
	return nc, bufio.NewReadWriter(bufio.NewReaderSize(r, connReadBuf), bufio.NewWriterSize(nc, connWriteBuf)), nil
}
