package loadgen

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (Linux ≥ 4.2; the syscall package lacks the
// name). With it, binding a source address leaves the port choice to connect(), which may
// reuse a port in TIME_WAIT towards another 4-tuple (and, with the loopback default
// tcp_tw_reuse=2, towards the same one), so back-to-back runs do not exhaust the range.
const ipBindAddressNoPort = 24

// dialer opens WebSockets spread round-robin over a set of source addresses, one HTTP
// client per address.
type dialer struct {
	url     string
	clients []*http.Client // nil entry: no source binding
	limit   int64
}

func newDialer(url string, srcs []net.IP, readLimit int64) *dialer {
	d := &dialer{url: url, limit: readLimit}
	if len(srcs) == 0 {
		srcs = []net.IP{nil}
	}
	for _, ip := range srcs {
		d.clients = append(d.clients, newHTTPClient(ip))
	}
	return d
}

func newHTTPClient(src net.IP) *http.Client {
	nd := &net.Dialer{Timeout: 30 * time.Second}
	if src != nil {
		nd.LocalAddr = &net.TCPAddr{IP: src}
		nd.Control = func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) {
				// Best effort: without it, bind picks the port and TIME_WAIT ports stay taken.
				_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
			})
		}
	}
	// A fresh Transport: no proxy from the environment, no HTTP/2 (the upgrade needs 1.1).
	return &http.Client{Transport: &http.Transport{
		DialContext:         nd.DialContext,
		MaxIdleConnsPerHost: -1,
		DisableCompression:  true,
	}}
}

// dial opens socket i (as user, when not empty) from its source address and sets its read
// limit; the caller reads the welcome.
func (d *dialer) dial(ctx context.Context, i int, user string) (*websocket.Conn, error) {
	u := d.url
	if user != "" {
		sep := "?"
		if strings.Contains(u, "?") {
			sep = "&"
		}
		u += sep + "user=" + user
	}
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: d.clients[i%len(d.clients)]})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("handshake: HTTP %d: %w", resp.StatusCode, err)
		}
		return nil, fmt.Errorf("handshake: %w", err)
	}
	c.SetReadLimit(d.limit)
	return c, nil
}
