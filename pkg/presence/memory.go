package presence

import (
	"context"
	"slices"
	"strings"
	"sync"

	"github.com/wsgw/wsgw/pkg/protocol"
)

// Memory is the presence store of a standalone gateway: a map under a mutex. Changes are
// visible at once and nothing is published.
type Memory struct {
	mu    sync.Mutex
	users map[string]protocol.User
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty store.
func NewMemory() *Memory { return &Memory{users: make(map[string]protocol.User)} }

// Join records u.
func (m *Memory) Join(u protocol.User) {
	m.mu.Lock()
	m.users[u.ConnID] = u
	m.mu.Unlock()
}

// Leave forgets connID.
func (m *Memory) Leave(connID, _ string) {
	m.mu.Lock()
	delete(m.users, connID)
	m.mu.Unlock()
}

// List returns the online connections ordered by connection time, then conn_id.
func (m *Memory) List(context.Context) ([]protocol.User, error) {
	m.mu.Lock()
	out := make([]protocol.User, 0, len(m.users))
	for _, u := range m.users {
		out = append(out, u)
	}
	m.mu.Unlock()
	Sort(out)
	return out, nil
}

// Close forgets everyone.
func (m *Memory) Close(context.Context) error {
	m.mu.Lock()
	clear(m.users)
	m.mu.Unlock()
	return nil
}

// Sort orders users by connection time, then conn_id, as GET /users lists them.
func Sort(users []protocol.User) {
	slices.SortFunc(users, func(a, b protocol.User) int {
		if c := a.ConnectedAt.Compare(b.ConnectedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ConnID, b.ConnID)
	})
}
