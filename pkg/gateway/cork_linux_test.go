package gateway

import (
	"syscall"
	"testing"
)

// corkOf reads TCP_CORK; ok is false where the system has none.
func corkOf(t *testing.T, rc syscall.RawConn) (on, ok bool) {
	t.Helper()
	var v int
	var serr error
	if err := rc.Control(func(fd uintptr) { v, serr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK) }); err != nil || serr != nil {
		t.Fatalf("getsockopt TCP_CORK: %v %v", err, serr)
	}
	return v != 0, true
}
