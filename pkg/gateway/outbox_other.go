//go:build !unix

package gateway

// writeNonblock takes nothing where there is no non-blocking write: every byte goes through
// the outbox's flusher.
func writeNonblock(uintptr, []byte) (int, error) { return 0, nil }

// readNonblock is never called where there is no readPoller.
func readNonblock(uintptr, []byte) (int, error) { return 0, errWouldBlock }
