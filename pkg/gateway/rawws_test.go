package gateway

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"testing"
	"time"
)

// A raw WebSocket client for the tests that must send what no well-behaved library sends
// (a header declaring 64 MiB, invalid UTF-8, a ping flood without ever reading) or must see
// exactly when the server's close frame arrives.

// rawConn is an upgraded connection driven by hand. br is nil when the upgrade was sent
// without reading the response (a client that never reads).
type rawConn struct {
	net.Conn
	br *bufio.Reader
}

// rawDial opens a TCP connection to the ws:// URL u and sends the upgrade request. With
// readResponse it waits for the 101; without, it reads nothing at all. rcvbuf > 0 shrinks the
// client's receive buffer before connecting, so a client that never reads backs the server up
// quickly.
func rawDial(t testing.TB, u string, readResponse bool, rcvbuf int) *rawConn {
	t.Helper()
	rc := rawDialSending(t, u, rcvbuf, nil)
	if readResponse {
		rc.readUpgrade(t)
	}
	return rc
}

// rawDialSending sends the upgrade request followed by first in one write, and reads nothing.
func rawDialSending(t testing.TB, u string, rcvbuf int, first []byte) *rawConn {
	t.Helper()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	if rcvbuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	nc, err := d.Dial("tcp", pu.Host)
	if err != nil {
		t.Fatalf("raw dial %s: %v", pu.Host, err)
	}
	t.Cleanup(func() { nc.Close() })
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", pu.RequestURI(), pu.Host)
	_ = nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Write(append([]byte(req), first...)); err != nil {
		t.Fatalf("raw upgrade request: %v", err)
	}
	_ = nc.SetWriteDeadline(time.Time{})
	return &rawConn{Conn: nc}
}

// readUpgrade reads the server's answer to the upgrade request and fails unless it is 101.
func (rc *rawConn) readUpgrade(t testing.TB) {
	t.Helper()
	rc.br = newBufReader(rc.Conn)
	_ = rc.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		t.Fatalf("raw upgrade response: %v", err)
	}
	_ = rc.SetReadDeadline(time.Time{})
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("raw upgrade: %s", resp.Status)
	}
}

func newBufReader(nc net.Conn) *bufio.Reader { return bufio.NewReader(nc) }

// Opcodes (RFC 6455 §5.2).
const (
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
)

// clientFrame encodes a final, masked client frame. declared, when ≥ 0, replaces the payload
// length in the header (a lie: the test sends fewer bytes than it announces).
func clientFrame(op byte, payload []byte, declared int64) []byte {
	n := int64(len(payload))
	if declared >= 0 {
		n = declared
	}
	b := []byte{0x80 | op}
	switch {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	b = append(b, key[:]...)
	for i, c := range payload {
		b = append(b, c^key[i%4])
	}
	return b
}

// readServerFrame reads one unmasked server frame.
func (rc *rawConn) readServerFrame(deadline time.Time) (op byte, payload []byte, err error) {
	_ = rc.SetReadDeadline(deadline)
	var h [2]byte
	if _, err := io.ReadFull(rc.br, h[:]); err != nil {
		return 0, nil, err
	}
	n := int64(h[1] & 0x7f)
	switch n {
	case 126:
		var e [2]byte
		if _, err := io.ReadFull(rc.br, e[:]); err != nil {
			return 0, nil, err
		}
		n = int64(binary.BigEndian.Uint16(e[:]))
	case 127:
		var e [8]byte
		if _, err := io.ReadFull(rc.br, e[:]); err != nil {
			return 0, nil, err
		}
		n = int64(binary.BigEndian.Uint64(e[:]))
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(rc.br, payload); err != nil {
		return 0, nil, err
	}
	return h[0] & 0x0f, payload, nil
}

// readClose reads frames until a close frame and returns its status code (0: none in it).
func (rc *rawConn) readClose(t testing.TB, within time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		op, p, err := rc.readServerFrame(deadline)
		if err != nil {
			t.Fatalf("no close frame within %v: %v", within, err)
		}
		if op == opClose {
			if len(p) < 2 {
				return 0
			}
			return int(binary.BigEndian.Uint16(p))
		}
	}
}
