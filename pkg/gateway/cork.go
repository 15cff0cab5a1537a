package gateway

import (
	"context"
	"net"
	"syscall"
)

type socketKey struct{}

// withSocket is the http.Server's ConnContext: a request's context carries its socket, so the
// WebSocket handler can set socket options before net/http writes the 101.
func withSocket(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, socketKey{}, c)
}

// corked holds back partial segments on the request's socket (where the server put it in
// the context and the system can) and returns the function that releases them.
func corked(ctx context.Context) func() {
	sc, ok := ctx.Value(socketKey{}).(syscall.Conn)
	if !ok {
		return func() {}
	}
	rc, err := sc.SyscallConn()
	if err != nil || !setCork(rc, true) {
		return func() {}
	}
	return func() { setCork(rc, false) }
}
