// Package presence records which connections are online.
//
// Store is the seam between standalone and cluster mode: Memory keeps one process's
// connections in a map, Redis keeps the whole cluster's in one hash with heartbeats and a
// sweeper. The gateway calls Join and Leave from its connection goroutines, so both must
// return at once whatever the backing store is doing.
package presence

import (
	"context"

	"github.com/wsgw/wsgw/pkg/protocol"
)

// Store records online connections.
//
// Join and Leave never block on I/O: implementations queue the change and apply it in the
// background (a Redis store batches many changes into one round trip, retries while Redis is
// down and writes every live connection back after Redis restarts empty). A connection that
// joined and left before the change was flushed may never appear at all. Every change is
// published as a protocol.PresenceEvent where the implementation has a channel for it.
type Store interface {
	// Join records an open connection of this gateway.
	Join(u protocol.User)

	// Leave removes a connection; reason is protocol.ReasonClosed or protocol.ReasonDrained.
	Leave(connID, reason string)

	// List returns every online connection the store knows: the whole cluster's for Redis.
	List(ctx context.Context) ([]protocol.User, error)

	// Close flushes pending changes, removes what is left of this gateway's connections (as
	// drained) and its heartbeat, and stops background work. Call it once, after the gateway
	// has stopped accepting connections.
	Close(ctx context.Context) error
}
