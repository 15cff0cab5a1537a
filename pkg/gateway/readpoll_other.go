//go:build !linux

package gateway

import "errors"

// readPoller is Linux-only (epoll): elsewhere every connection keeps its reader goroutine.
type readPoller struct{}

func newReadPoller() (*readPoller, error) {
	return nil, errors.New("gateway: no epoll on this system")
}

func (*readPoller) register(*conn)       {}
func (*readPoller) arm(*conn, bool) bool { return false }
func (*readPoller) forget(*conn)         {}
func (*readPoller) close()               {}
