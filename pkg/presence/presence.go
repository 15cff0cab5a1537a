// Package presence records which connections are online.
//
// Store is the seam between standalone and cluster mode: Memory keeps one process's
// connections in a map, Redis keeps the whole cluster's in Redis hashes (one, or
// PRESENCE_SHARDS) with heartbeats and a sweeper. The gateway calls Join and Leave from its
// connection goroutines, so both must return at once whatever the backing store is doing.
//
// Entry points: NewMemory, NewRedis, and the Store interface they implement.
package presence

import (
	"context"
	"errors"
	"time"

	"github.com/wsgw/wsgw/pkg/protocol"
)

// Store records online connections.
//
// Join and Leave never block on I/O: implementations queue the change and apply it in the
// background (a Redis store batches many changes into one round trip, retries while Redis is
// down and writes every live connection back after Redis restarts empty). A connection that
// joined and left before the change was flushed may never appear at all. Every change is
// published as a protocol.PresenceEvent where the implementation has a channel for it, and a
// connection's joins and leaves alternate: exactly one leave per join.
//
// Besides connections, a store counts distinct users (a user with two tabs is one), in step
// with the connections: never negative, never a user without a connection.
type Store interface {
	// Join records an open connection of this gateway.
	Join(u protocol.User)

	// Leave removes a connection; reason is protocol.ReasonClosed or protocol.ReasonDrained.
	Leave(connID, reason string)

	// Page returns up to limit online connections (the whole cluster's for Redis) after
	// cursor ("" for the first page), the cursor of the next page ("" after the last), and the
	// totals. Walking every page lists every connection that stayed online during the walk,
	// possibly some twice; never one command over everything. A cursor the store did not
	// hand out gives an error wrapping ErrBadCursor.
	Page(ctx context.Context, cursor string, limit int) (Page, error)

	// List returns every online connection, walking all pages, ordered by Sort.
	List(ctx context.Context) ([]protocol.User, error)

	// Close flushes pending changes, removes what is left of this gateway's connections (as
	// drained) and its heartbeat, and stops background work. Call it once, after the gateway
	// has stopped accepting connections.
	Close(ctx context.Context) error
}

// Page is one page of online connections, as GET /users serves it.
type Page struct {
	Users      []protocol.User // ordered by Sort within the page
	NextCursor string          // "" on the last page
	Count      int             // all online connections
	Distinct   int             // distinct users among them
}

// ErrBadCursor is wrapped by Page's error for a cursor it cannot read.
var ErrBadCursor = errors.New("bad cursor")

// Page sizes of GET /users.
const (
	DefaultPageSize = 1000
	MaxPageSize     = 10000
)

// listAll walks every page of s and returns the connections, each once, ordered by Sort.
func listAll(ctx context.Context, s Store) ([]protocol.User, error) {
	seen := make(map[string]bool)
	out := []protocol.User{}
	cursor := ""
	for {
		p, err := s.Page(ctx, cursor, MaxPageSize)
		if err != nil {
			return nil, err
		}
		for _, u := range p.Users {
			if !seen[u.ConnID] {
				seen[u.ConnID] = true
				out = append(out, u)
			}
		}
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
	}
	Sort(out)
	return out, nil
}

// WriteHealth is implemented by stores whose writes can fail (Redis): the gateway's readiness
// shows "presence writes failing since …" while WriteFailingSince is not zero.
type WriteHealth interface {
	WriteFailingSince() time.Time
}

var _ WriteHealth = (*Redis)(nil)
