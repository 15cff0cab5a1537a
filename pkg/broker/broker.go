// Package broker carries tick frames from the one publisher to every gateway.
//
// Broker is the seam between standalone and cluster mode: Memory serves one process, Redis
// serves a cluster over one pub/sub channel. Gateways subscribe once per process and fan the
// frames out locally (see package hub), so a broker never knows about WebSocket connections.
package broker

import (
	"context"
	"errors"
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
	// single goroutine. fn must not block (it runs on the broker's reader: a slow fn delays every
	// later frame) and must not modify or keep the slice beyond handing it on unchanged.
	// Subscribe returns once the subscription is confirmed, so a frame published after it
	// returns is delivered. Delivery stops when ctx is done or Close is called.
	Subscribe(ctx context.Context, fn func(frame []byte)) error

	// Ready reports whether the broker can deliver now: for Redis, the server answers and the
	// subscription is not wedged. Implementations may repair themselves when it is not (Redis
	// resubscribes) and report the problem this once.
	Ready(ctx context.Context) error

	// Close stops every subscription and releases resources. It does not close a Redis client
	// passed in by the caller.
	Close() error
}
