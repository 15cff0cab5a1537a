package gateway

import "syscall"

// setCork sets or clears TCP_CORK; clearing it sends what it held at once.
func setCork(rc syscall.RawConn, on bool) bool {
	v := 0
	if on {
		v = 1
	}
	var serr error
	err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK, v) })
	return err == nil && serr == nil
}
