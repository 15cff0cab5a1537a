//go:build unix

package gateway

import "syscall"

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
