package gateway

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

// refFirstTooBig parses a whole client byte stream at once and returns the offset of the
// first data frame header declaring more than limit (and that header's length), or -1 when
// every complete header is within it. A written-out reference for the streaming guard.
func refFirstTooBig(b []byte, limit int64) (at, hlen int) {
	for i := 0; ; {
		if len(b)-i < 2 {
			return -1, 0
		}
		op, l7, masked := b[i]&0x0f, int(b[i+1]&0x7f), b[i+1]&0x80 != 0
		h := 2
		var n uint64
		switch {
		case l7 == 126:
			h += 2
			if len(b)-i < h {
				return -1, 0
			}
			n = uint64(b[i+2])<<8 | uint64(b[i+3])
		case l7 == 127:
			h += 8
			if len(b)-i < h {
				return -1, 0
			}
			n = binary.BigEndian.Uint64(b[i+2:])
		default:
			n = uint64(l7)
		}
		if masked {
			h += 4
		}
		if len(b)-i < h {
			return -1, 0
		}
		if op < 8 && n > uint64(limit) {
			return i, h
		}
		if n > uint64(len(b)-i-h) {
			return -1, 0
		}
		i += h + int(n)
	}
}

// chunkReader returns b in reads of the sizes cycled from sizes (each 1–256).
type chunkReader struct {
	b     []byte
	sizes []byte
	k     int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := 1
	if len(r.sizes) > 0 {
		n = int(r.sizes[r.k%len(r.sizes)]) + 1
		r.k++
	}
	n = min(n, len(p), len(r.b))
	copy(p, r.b[:n])
	r.b = r.b[n:]
	return n, nil
}

// checkGuard runs stream through a frameGuard in the given chunking and compares with the
// reference: everything passes when no header is too big; otherwise the bytes before the
// offending header pass (plus at most the part of it in earlier reads) and then the error.
func checkGuard(t *testing.T, stream, sizes []byte, limit int64) {
	t.Helper()
	g := &frameGuard{r: &chunkReader{b: stream, sizes: sizes}, limit: limit}
	var out []byte
	buf := make([]byte, 512)
	var err error
	for err == nil {
		var n int
		n, err = g.Read(buf)
		out = append(out, buf[:n]...)
	}
	at, hlen := refFirstTooBig(stream, limit)
	if at < 0 {
		if err != io.EOF || !bytes.Equal(out, stream) {
			t.Fatalf("limit %d: passed %d of %d bytes, err %v; want all and EOF", limit, len(out), len(stream), err)
		}
		return
	}
	if !errors.Is(err, errFrameTooBig) {
		t.Fatalf("limit %d: err %v after %d bytes, want errFrameTooBig (bad header at %d)", limit, err, len(out), at)
	}
	if len(out) < at || len(out) >= at+hlen || !bytes.Equal(out, stream[:len(out)]) {
		t.Fatalf("limit %d: passed %d bytes, want the %d before the bad header (+ < %d of it)", limit, len(out), at, hlen)
	}
}

func TestFrameGuard(t *testing.T) {
	ok := clientFrame(opText, []byte(`{"type":"fib","n":10}`), -1)
	ping := clientFrame(opPing, []byte("hi"), -1)
	mid := clientFrame(opText, bytes.Repeat([]byte{'a'}, 300), -1)   // 16-bit length
	big := clientFrame(opText, nil, 64<<20)                          // 64-bit length, no payload
	edge := clientFrame(opText, bytes.Repeat([]byte{'b'}, 4096), -1) // exactly the limit
	over := clientFrame(opText, nil, 4097)
	cont := append([]byte{0x00, 0x80 | 127}, binary.BigEndian.AppendUint64(nil, 1<<40)...) // continuation, unmasked
	neg := append([]byte{0x81, 0x80 | 127}, binary.BigEndian.AppendUint64(nil, 1<<63)...)
	bigPing := append([]byte{0x89, 0x80 | 126, 0x10, 0x00}, make([]byte, 4)...) // control: the library's business
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	for name, stream := range map[string][]byte{
		"ok":            cat(ok, ping, mid, edge, ok),
		"big":           cat(ok, ping, big),
		"big first":     big,
		"over by one":   cat(edge, over, ok),
		"continuation":  cat(ok, cont),
		"negative":      neg,
		"big control":   cat(bigPing, make([]byte, 4096), ok),
		"truncated":     cat(ok, big[:5]),
		"split payload": cat(mid, mid, ok),
	} {
		t.Run(name, func(t *testing.T) {
			for _, sizes := range [][]byte{nil, {0}, {1}, {2, 0, 6}, {13}, {255}, {3, 200, 0, 9}} {
				checkGuard(t, stream, sizes, 4096)
			}
		})
	}
	// The guard answers at the header: nothing after it is needed (the socket may stay silent).
	g := &frameGuard{r: io.MultiReader(bytes.NewReader(cat(ok, big)), blockingReader{}), limit: 4096}
	out, err := io.ReadAll(g)
	if !errors.Is(err, errFrameTooBig) || !bytes.Equal(out, ok) {
		t.Fatalf("read %d bytes, err %v; want %d and errFrameTooBig without reading on", len(out), err, len(ok))
	}
}

// blockingReader fails the test's expectations if read: it stands for a socket that never
// sends the payload.
type blockingReader struct{}

func (blockingReader) Read([]byte) (int, error) { panic("read past a too-big header") }

func FuzzFrameGuard(f *testing.F) {
	f.Add(clientFrame(opText, []byte("hello"), -1), []byte{3}, uint16(4096))
	f.Add(append(clientFrame(opText, []byte("x"), -1), clientFrame(opText, nil, 64<<20)...), []byte{0, 7}, uint16(4096))
	f.Add(clientFrame(opBinary, make([]byte, 200), -1), []byte{1}, uint16(100))
	f.Fuzz(func(t *testing.T, stream, sizes []byte, limit uint16) {
		checkGuard(t, stream, sizes, int64(limit))
	})
}
