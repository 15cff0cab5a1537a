package gateway

import (
	"errors"
	"io"
	"sync"

	"github.com/coder/websocket"
)

func asCloseError(err error, ce *websocket.CloseError) bool { return errors.As(err, ce) }

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
