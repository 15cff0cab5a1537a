package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// Retry backoff of the writer while Redis fails: 100 ms doubling to 2 s.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 2 * time.Second
)

// linger is how long the writer waits after the first change before sending, so changes made
// together go out together. Small against the 1 s promised for events.
const linger = 5 * time.Millisecond

// write is the single writer: it sends queued changes, refreshes the heartbeat every TTL/3 and
// writes everything back when Redis may have lost it. It is the only goroutine that writes
// this gateway's fields, so changes reach Redis in the order they were made.
func (r *Redis) write() {
	defer r.wg.Done()
	hb := time.NewTicker(r.ttl / 3)
	defer hb.Stop()
	var (
		retry   <-chan time.Time // non-nil while backing off
		backoff time.Duration
	)
	for {
		hbDue := false // a failed round trip asks for a write-back, which includes the heartbeat
		select {
		case <-r.ctx.Done():
			return
		case <-r.wake:
			// Let a burst (a reconnect storm) gather into full batches first.
			select {
			case <-r.ctx.Done():
				return
			case <-time.After(linger):
			}
		case <-hb.C:
			hbDue = true
		case <-retry:
			retry = nil
		}
		if retry != nil {
			continue // backing off: the queue waits for the retry
		}
		ctx, cancel := context.WithTimeout(r.ctx, opTimeout)
		err := r.sync(ctx, hbDue)
		cancel()
		if err == nil {
			if backoff > 0 {
				r.log.Info("presence: redis writes recovered")
			}
			backoff = 0
			continue
		}
		if r.metrics != nil {
			r.metrics.PresenceFailures.Inc()
		}
		if backoff == 0 {
			r.log.Warn("presence: redis write failed, retrying", "err", err)
		}
		r.resync.Store(true) // Redis may come back empty: write everything back first
		backoff = min(max(2*backoff, minBackoff), maxBackoff)
		retry = time.After(backoff)
	}
}

// sync does whatever is due: a full write-back (when resync is set), the heartbeat, then the
// queue in batches. On error the caller sets resync, so nothing due is lost.
func (r *Redis) sync(ctx context.Context, hbDue bool) error {
	for {
		if r.resync.Swap(false) {
			if err := r.writeBack(ctx); err != nil {
				return err
			}
			hbDue = false
		}
		if hbDue {
			missing, err := r.heartbeat(ctx)
			if err != nil {
				return err
			}
			hbDue = false
			if missing {
				r.log.Warn("presence: heartbeat was missing, writing connections back")
				r.resync.Store(true)
				continue
			}
		}
		batch := r.peek()
		if len(batch) == 0 {
			return nil
		}
		missing, err := r.flush(ctx, batch)
		if err != nil {
			return err
		}
		r.drop(len(batch))
		if missing {
			r.log.Warn("presence: heartbeat was missing, writing connections back")
			r.resync.Store(true)
		}
	}
}

// peek returns up to maxBatch of the oldest queued changes, leaving them queued.
func (r *Redis) peek() []change {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := min(len(r.pending), maxBatch)
	return append([]change(nil), r.pending[:n]...)
}

// drop removes the n oldest queued changes once they are written.
func (r *Redis) drop(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending = r.pending[n:]
	if len(r.pending) == 0 {
		r.pending = nil // let a large backing array go
	}
}

// heartbeatJSON is the heartbeat value with the current number of connections.
func (r *Redis) heartbeatJSON() []byte {
	r.mu.Lock()
	n := len(r.live)
	r.mu.Unlock()
	b, _ := json.Marshal(protocol.Heartbeat{Addr: r.addr, StartedAt: r.started, Connections: n})
	return b
}

// setHeartbeat queues SET heartbeat PX ttl GET and SADD gateways, in that order (a sweeper
// must never find the id in the set without its heartbeat). The GET tells whether the key was
// missing: Redis restarted or this gateway was swept.
func (r *Redis) setHeartbeat(ctx context.Context, p redis.Pipeliner) *redis.StatusCmd {
	cmd := p.SetArgs(ctx, r.keys.heartbeat, r.heartbeatJSON(), redis.SetArgs{TTL: r.ttl, Get: true})
	p.SAdd(ctx, r.keys.gateways, r.id)
	return cmd
}

// execErr runs p and returns its first real error (a missing old heartbeat is not one) and
// whether the heartbeat was missing.
func execErr(ctx context.Context, p redis.Pipeliner, hb *redis.StatusCmd) (missing bool, err error) {
	cmds, err := p.Exec(ctx)
	if err != nil && !errors.Is(err, redis.Nil) {
		return false, err
	}
	for _, c := range cmds {
		if c == hb {
			if errors.Is(c.Err(), redis.Nil) {
				missing = true
				continue
			}
		}
		if c.Err() != nil {
			return false, c.Err()
		}
	}
	return missing, nil
}

// pipeline returns a pipeline for this store's writes. In Cluster mode it is bound to the node
// owning the hash's slot (with a hash-tagged prefix, every key's): keyless PUBLISH would
// otherwise go to a random node, and events from different nodes reach subscribers out of
// order (a leave before its join).
func (r *Redis) pipeline(ctx context.Context) (redis.Pipeliner, error) {
	if cc, ok := r.client.(*redis.ClusterClient); ok {
		node, err := cc.MasterForKey(ctx, r.keys.hash)
		if err != nil {
			return nil, fmt.Errorf("find node of %s: %w", r.keys.hash, err)
		}
		return node.Pipeline(), nil
	}
	return r.client.Pipeline(), nil
}

// heartbeat refreshes the heartbeat and reports whether it had been missing.
func (r *Redis) heartbeat(ctx context.Context) (bool, error) {
	p, err := r.pipeline(ctx)
	if err != nil {
		return false, fmt.Errorf("presence: heartbeat: %w", err)
	}
	hb := r.setHeartbeat(ctx, p)
	missing, err := execErr(ctx, p, hb)
	if err != nil {
		return false, fmt.Errorf("presence: heartbeat: %w", err)
	}
	return missing, nil
}

// flush writes one batch of changes in one pipeline: heartbeat, HSET and SADD to the index for
// connections whose last change is a join, HDEL and SREM for those whose last is a leave, then
// one event per change in order. It reports whether the heartbeat had been missing.
func (r *Redis) flush(ctx context.Context, batch []change) (bool, error) {
	last := make(map[string]change, len(batch)) // conn_id → its last change in the batch
	for _, c := range batch {
		last[c.user.ConnID] = c
	}
	var set []any
	var add, del []string
	for _, c := range batch {
		id := c.user.ConnID
		l, ok := last[id]
		if !ok {
			continue // already handled
		}
		delete(last, id)
		if l.join {
			set = append(set, id, presenceJSON(l.user))
			add = append(add, id)
		} else {
			del = append(del, id)
		}
	}
	p, err := r.pipeline(ctx)
	if err != nil {
		return false, fmt.Errorf("presence: flush %d changes: %w", len(batch), err)
	}
	hb := r.setHeartbeat(ctx, p)
	if len(set) > 0 {
		p.HSet(ctx, r.keys.hash, set...)
		p.SAdd(ctx, r.keys.index, toAny(add)...)
	}
	if len(del) > 0 {
		p.HDel(ctx, r.keys.hash, del...)
		p.SRem(ctx, r.keys.index, toAny(del)...)
	}
	for _, c := range batch {
		ev := protocol.PresenceEvent{Type: protocol.EventJoin, ConnID: c.user.ConnID, User: c.user.User, Gateway: r.id}
		if !c.join {
			ev.Type, ev.Reason = protocol.EventLeave, c.reason
		}
		b, _ := json.Marshal(ev)
		p.Publish(ctx, r.keys.events, b)
	}
	missing, err := execErr(ctx, p, hb)
	if err != nil {
		return false, fmt.Errorf("presence: flush %d changes: %w", len(batch), err)
	}
	if r.metrics != nil {
		r.metrics.PresenceWrites.Add(float64(len(batch)))
	}
	return missing, nil
}

// writeBack writes the heartbeat and every live connection (field and index), publishing
// nothing: after a Redis restart, this gateway's connections are there again. Connections
// whose join is still queued are left to flush, so no field appears before its join event.
func (r *Redis) writeBack(ctx context.Context) error {
	r.mu.Lock()
	queued := make(map[string]bool) // joins still queued: written with their event by flush
	for _, c := range r.pending {
		if c.join {
			queued[c.user.ConnID] = true
		}
	}
	users := make([]protocol.User, 0, len(r.live))
	for id, u := range r.live {
		if !queued[id] {
			users = append(users, u)
		}
	}
	r.mu.Unlock()

	p, err := r.pipeline(ctx)
	if err != nil {
		return fmt.Errorf("presence: write back: %w", err)
	}
	hb := r.setHeartbeat(ctx, p)
	if _, err := execErr(ctx, p, hb); err != nil {
		return fmt.Errorf("presence: write back heartbeat: %w", err)
	}
	for len(users) > 0 {
		n := min(len(users), maxBatch)
		chunk := users[:n]
		users = users[n:]
		set := make([]any, 0, 2*n)
		ids := make([]any, 0, n)
		for _, u := range chunk {
			set = append(set, u.ConnID, presenceJSON(u))
			ids = append(ids, u.ConnID)
		}
		_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, r.keys.hash, set...)
			p.SAdd(ctx, r.keys.index, ids...)
			return nil
		})
		if err != nil {
			return fmt.Errorf("presence: write back %d connections: %w", n, err)
		}
	}
	return nil
}

func presenceJSON(u protocol.User) []byte {
	b, _ := json.Marshal(protocol.Presence{User: u.User, Gateway: u.Gateway, ConnectedAt: u.ConnectedAt})
	return b
}

func toAny(s []string) []any {
	a := make([]any, len(s))
	for i, v := range s {
		a[i] = v
	}
	return a
}
