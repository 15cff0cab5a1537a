package broker

import (
	"context"
	"sync"
)

// Memory is the broker of a standalone gateway: publisher and subscribers in one process.
// Publish calls every subscriber synchronously, so it is exactly as fast as they are (they
// must not block, per the Broker contract).
type Memory struct {
	mu     sync.RWMutex
	subs   map[*memorySub]struct{}
	closed bool
}

type memorySub struct{ fn func([]byte) }

var _ Broker = (*Memory)(nil)

// NewMemory returns an empty in-process broker.
func NewMemory() *Memory { return &Memory{subs: make(map[*memorySub]struct{})} }

// Publish delivers frame to every subscriber before returning.
func (m *Memory) Publish(ctx context.Context, frame []byte) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return ErrClosed
	}
	for s := range m.subs {
		s.fn(frame)
	}
	return nil
}

// Subscribe registers fn until ctx is done or the broker is closed.
func (m *Memory) Subscribe(ctx context.Context, fn func([]byte)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	s := &memorySub{fn: fn}
	m.subs[s] = struct{}{}
	context.AfterFunc(ctx, func() {
		m.mu.Lock()
		delete(m.subs, s)
		m.mu.Unlock()
	})
	return nil
}

// Health is always healthy: there is nothing to lose contact with.
func (m *Memory) Health() Health { return Health{} }

// Close drops every subscriber.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	clear(m.subs)
	return nil
}
