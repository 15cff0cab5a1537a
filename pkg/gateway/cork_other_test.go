//go:build !linux

package gateway

import (
	"syscall"
	"testing"
)

func corkOf(*testing.T, syscall.RawConn) (on, ok bool) { return false, false }
