// Package broker carries tick frames from the one publisher to every gateway.
//
// Broker is the seam between standalone and cluster mode: Memory serves one process, Redis
// serves a cluster over one pub/sub channel. Gateways subscribe once per process and fan the
// frames out locally (see package hub), so a broker never knows about WebSocket connections.
package broker

import (
	"context"
	"errors"
	"time"
)

// ErrClosed is returned by operations on a closed broker.
var ErrClosed = errors.New("broker: closed")

// Broker publishes tick frames and delivers them to subscribers.
//
// Delivery is at most once and best effort: a frame published while a subscriber is
// disconnected (Redis restarting, network cut) is lost, never replayed. Frames from one
// publisher arrive in the order published. Subscribers must tolerate duplicates and older
// frames (two tickers during a failover); the gateway drops them by seq.
type Broker interface {
	// Publish sends frame, unchanged, to every current subscriber. The frame must not be
	// modified afterwards: implementations may hand the same slice to every subscriber.
	Publish(ctx context.Context, frame []byte) error

	// Subscribe registers fn, which is then called with every frame received, in order, from a
	// single goroutine. fn should return quickly and must not modify or keep the slice beyond
	// handing it on unchanged. A slow fn delays later deliveries but never the reading of the
	// subscription: frames read meanwhile wait in the broker (Redis), so it neither loses them
	// nor makes the subscription look broken. Subscribe returns once the subscription is
	// confirmed, so a frame published after it returns is delivered. Delivery stops when ctx is
	// done or Close is called.
	Subscribe(ctx context.Context, fn func(frame []byte)) error

	// Health reports what the broker's own background checks found last, without any I/O, so
	// a readiness probe answers at once whatever the backing store does. A broker that finds
	// its subscription broken repairs it by itself; Health only tells.
	Health() Health

	// Close stops every subscription and releases resources. It does not close a Redis client
	// passed in by the caller.
	Close() error
}

// Health is the state of a broker as its background checks last saw it. The zero value means
// healthy.
type Health struct {
	// Store names the backing store the broker talks to ("redis"), empty when there is none
	// (Memory): readiness then has nothing to report about it.
	Store string
	// UnreachableSince is zero while the backing store answers; otherwise the instant of the
	// last successful round trip (or of the start of the checks), after which none succeeded
	// for the broker's unreachable threshold (3 s for Redis).
	UnreachableSince time.Time
	// Subscription is empty while the subscription is delivering; otherwise what is wrong
	// with it (the broker is repairing it).
	Subscription string
}

// OK reports whether h is healthy.
func (h Health) OK() bool { return h.UnreachableSince.IsZero() && h.Subscription == "" }
