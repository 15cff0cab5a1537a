//go:build !linux

package gateway

import "syscall"

// setCork is Linux-only: elsewhere the 101 and the welcome leave as two segments.
func setCork(syscall.RawConn, bool) bool { return false }
