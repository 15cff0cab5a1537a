package gateway

import (
	"encoding/binary"
	"errors"
	"io"
)

// errFrameTooBig is what the read side returns, sticky, once a client frame header declares a
// data frame longer than READ_LIMIT. The reader answers it with 1009.
var errFrameTooBig = errors.New("gateway: frame header declares more than the read limit")

// frameGuard sits between a client's socket and coder/websocket's reader and parses only the
// frame headers passing through (RFC 6455 §5.2), skipping payloads without copying them. The
// library checks its read limit only while it reads a payload, so a header declaring 64 MiB
// followed by nothing would hold the connection until the ping timeout; the guard refuses it as
// soon as the header is complete: it hands over the bytes before that header, then errFrameTooBig.
//
// Control frames are left to the library (it rejects those over 125 bytes). A message split
// into fragments is checked per fragment here and as a whole by the library's limit.
//
// Used by the connection's one reader only: not safe for concurrent use.
type frameGuard struct {
	r     io.Reader
	limit int64

	skip int64    // payload bytes of the current frame still to pass
	hdr  [14]byte // the header being assembled: 2 bytes, 0/2/8 of length, 0/4 of mask key
	hn   int      // bytes of hdr so far
	frag bool     // inside a fragmented data message (its last fragment not seen yet)
	err  error    // sticky
}

// between reports whether everything read so far ends exactly at a frame boundary, outside a
// fragmented message: the next byte starts a new frame, and a new data message may begin.
func (g *frameGuard) between() bool {
	return g.err == nil && g.skip == 0 && g.hn == 0 && !g.frag
}

func (g *frameGuard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	n, err := g.r.Read(p)
	if ok, bad := g.scan(p[:n]); bad {
		g.err = errFrameTooBig
		if ok > 0 {
			return ok, nil
		}
		return 0, g.err
	}
	return n, err
}

// scan follows the frame boundaries through b. When a header declares too much it returns
// bad and how many bytes of b come before that header (0 when the header began in an earlier
// read: those bytes are already with the library, which then gets the error mid-header).
func (g *frameGuard) scan(b []byte) (ok int, bad bool) {
	for i := 0; i < len(b); {
		if g.skip > 0 {
			k := min(int64(len(b)-i), g.skip)
			i += int(k)
			g.skip -= k
			continue
		}
		if g.hn == 0 {
			ok = i
		}
		g.hdr[g.hn] = b[i]
		g.hn++
		i++
		need := headerLen(g.hdr[:g.hn])
		if need == 0 || g.hn < need {
			continue
		}
		g.hn = 0
		n := declaredLen(g.hdr[:need])
		if g.hdr[0]&0x08 == 0 { // opcodes 0–7: data frames
			if n < 0 || n > g.limit {
				return ok, true
			}
			g.frag = g.hdr[0]&0x80 == 0 // FIN clear: more fragments follow
		}
		g.skip = n
	}
	return len(b), false
}

// headerLen is the length of the frame header starting h, or 0 while h is too short to tell.
func headerLen(h []byte) int {
	if len(h) < 2 {
		return 0
	}
	n := 2
	switch h[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if h[1]&0x80 != 0 {
		n += 4
	}
	return n
}

// declaredLen is the payload length a complete header declares; negative when a 64-bit length
// has its most significant bit set (invalid).
func declaredLen(h []byte) int64 {
	switch n := h[1] & 0x7f; n {
	case 126:
		return int64(binary.BigEndian.Uint16(h[2:4]))
	case 127:
		return int64(binary.BigEndian.Uint64(h[2:10]))
	default:
		return int64(n)
	}
}
