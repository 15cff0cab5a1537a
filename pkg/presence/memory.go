package presence

import (
	"context"
	"slices"
	"strings"
	"sync"

	"github.com/wsgw/wsgw/pkg/protocol"
)

// Memory is the presence store of a standalone gateway: maps under a mutex. Changes are
// visible at once and nothing is published.
type Memory struct {
	mu    sync.Mutex
	conns map[string]protocol.User
	users map[string]int // user → open connections, deleted at 0
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty store.
func NewMemory() *Memory {
	return &Memory{conns: make(map[string]protocol.User), users: make(map[string]int)}
}

// Join records u. Joining a conn_id twice changes nothing.
func (m *Memory) Join(u protocol.User) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.conns[u.ConnID]; ok {
		return
	}
	m.conns[u.ConnID] = u
	m.users[u.User]++
}

// Leave forgets connID.
func (m *Memory) Leave(connID, _ string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.conns[connID]
	if !ok {
		return
	}
	delete(m.conns, connID)
	if m.users[u.User]--; m.users[u.User] <= 0 {
		delete(m.users, u.User)
	}
}

// Page returns the connections whose conn_id sorts after cursor, up to limit of them in
// conn_id order (then ordered by Sort); the next cursor is the last conn_id returned. So a
// walk misses nothing that stayed online and repeats nothing.
func (m *Memory) Page(_ context.Context, cursor string, limit int) (Page, error) {
	limit = clampLimit(limit)
	m.mu.Lock()
	ids := make([]string, 0, len(m.conns))
	for id := range m.conns {
		if id > cursor {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	more := len(ids) > limit
	ids = ids[:min(len(ids), limit)]
	p := Page{Users: make([]protocol.User, len(ids)), Count: len(m.conns), Distinct: len(m.users)}
	for i, id := range ids {
		p.Users[i] = m.conns[id]
	}
	m.mu.Unlock()
	if more {
		p.NextCursor = ids[len(ids)-1]
	}
	Sort(p.Users)
	return p, nil
}

// List returns the online connections ordered by connection time, then conn_id.
func (m *Memory) List(ctx context.Context) ([]protocol.User, error) { return listAll(ctx, m) }

// Close forgets everyone.
func (m *Memory) Close(context.Context) error {
	m.mu.Lock()
	clear(m.conns)
	clear(m.users)
	m.mu.Unlock()
	return nil
}

// clampLimit applies the page size's default and maximum.
func clampLimit(limit int) int {
	if limit <= 0 {
		return DefaultPageSize
	}
	return min(limit, MaxPageSize)
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
