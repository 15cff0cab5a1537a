//go:build unix

package gateway

import (
	"io"
	"syscall"
)

// writeNonblock makes one write(2) on the socket, which the Go runtime keeps in non-blocking
// mode: a full send buffer reads as 0 bytes taken, not as an error.
func writeNonblock(fd uintptr, p []byte) (int, error) {
	for {
		n, err := syscall.Write(int(fd), p)
		switch err {
		case nil:
			return n, nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return 0, nil
		default:
			return 0, err
		}
	}
}

// readNonblock makes one read(2) on the socket: errWouldBlock when it has nothing to read.
func readNonblock(fd uintptr, p []byte) (int, error) {
	for {
		n, err := syscall.Read(int(fd), p)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return 0, errWouldBlock
		case err != nil:
			return 0, err
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}
