package presence

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/wsgw/wsgw/pkg/protocol"
)

// Retry backoff of the writer while Redis fails: 100 ms doubling to 2 s, and at most TTL/6, so
// that after an outage every gateway has written its heartbeat again well before any of them
// may sweep (see sweepAllowed).
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
//
// Failed writes are retried until they succeed, counted (presence_write_failures_total), and
// logged twice per streak: when it starts and when it ends, with the count and the error.
func (r *Redis) write() {
	defer r.wg.Done()
	hb := time.NewTicker(r.ttl / 3)
	defer hb.Stop()
	var (
		retry   <-chan time.Time // non-nil while backing off
		backoff time.Duration
		failed  int   // failures in the current streak
		lastErr error // the streak's last error
	)
	capBackoff := min(maxBackoff, max(r.ttl/6, 10*time.Millisecond))
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
		err := r.sync(hbDue)
		if err == nil {
			if failed > 0 {
				r.log.Info("presence: redis writes recovered", "failures", failed,
					"for", r.now().Sub(r.WriteFailingSince()).Round(time.Millisecond), "err", lastErr)
				r.failingSince.Store(0)
			}
			failed, backoff, lastErr = 0, 0, nil
			continue
		}
		if r.ctx.Err() != nil {
			return // closing: not a Redis failure
		}
		if r.metrics != nil {
			r.metrics.PresenceFailures.Inc()
		}
		r.healthySince.Store(0)
		if failed == 0 {
			r.failingSince.Store(r.now().UnixNano())
			r.log.Warn("presence: redis writes failing, retrying until they succeed", "err", err)
		}
		failed++
		lastErr = err
		r.resync.Store(true) // Redis may come back empty: write everything back first
		backoff = min(max(2*backoff, minBackoff), capBackoff)
		retry = time.After(backoff)
	}
}

// wrote records a successful write: every write refreshes this gateway's heartbeat.
func (r *Redis) wrote() {
	now := r.now().UnixNano()
	r.lastOK.Store(now)
	r.healthySince.CompareAndSwap(0, now)
}

// sync does whatever is due: a full write-back (when resync is set), the heartbeat, then the
// queue in batches. On error the caller sets resync, so nothing due is lost. Each round trip has
// its own deadline (OpTimeout; a write-back one per script call): a pass lasts as long as changes
// keep arriving, and a healthy stream of them must never count as a failure.
func (r *Redis) sync(hbDue bool) error {
	for {
		if r.resync.Swap(false) {
			if err := r.writeBack(r.ctx); err != nil {
				return err
			}
			hbDue = false
		}
		if hbDue {
			ctx, cancel := context.WithTimeout(r.ctx, r.opTimeout)
			missing, err := r.heartbeat(ctx)
			cancel()
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
		ctx, cancel := context.WithTimeout(r.ctx, r.opTimeout)
		missing, err := r.flush(ctx, batch)
		cancel()
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

// shardKeys are the KEYS of flushScript (and the first four of the others) for shard i; with
// one shard the gateways set comes last, in the same slot.
func (r *Redis) shardKeys(i int, extra ...string) []string {
	s := r.shards[i]
	ks := append([]string{s.Heartbeat(r.id), s.Conns(r.id), s.Presence(), s.Users()}, extra...)
	if len(r.shards) == 1 {
		ks = append(ks, r.keys.Gateways())
	}
	return ks
}

func (r *Redis) ttlMS() string { return strconv.FormatInt(r.ttl.Milliseconds(), 10) }

// heartbeat refreshes the heartbeat (and its copy in every shard) and reports whether any was
// missing.
func (r *Redis) heartbeat(ctx context.Context) (bool, error) {
	missing, err := r.flushShards(ctx, make([][]any, len(r.shards)))
	if err != nil {
		return false, fmt.Errorf("presence: heartbeat: %w", err)
	}
	return missing, nil
}

// flushShards runs flushScript on every shard with its changes (nil: the heartbeat only) and,
// with several shards, refreshes the main heartbeat key and the gateways set after them.
func (r *Redis) flushShards(ctx context.Context, per [][]any) (bool, error) {
	hb := r.heartbeatJSON()
	missing := false
	for i, changes := range per {
		if changes == nil && len(r.shards) > 1 && !r.allShards(per) {
			continue // a batch only refreshes the shards it touches
		}
		args := append([]any{hb, r.ttlMS(), r.keys.Events(), r.id, r.epoch}, changes...)
		s := r.shards[i]
		m, err := flushScript.Run(ctx, r.client, r.shardKeys(i, s.Swept(r.id), s.Applied(r.id)), args...).Int()
		if err != nil {
			return false, fmt.Errorf("write shard %d: %w", i, err)
		}
		missing = missing || m == 1
	}
	if len(r.shards) > 1 {
		old, err := r.client.SetArgs(ctx, r.keys.Heartbeat(r.id), hb, redisSetGet(r.ttl)).Result()
		if err != nil && !isNil(err) {
			return false, fmt.Errorf("write heartbeat: %w", err)
		}
		missing = missing || old == ""
		if err := r.client.SAdd(ctx, r.keys.Gateways(), r.id).Err(); err != nil {
			return false, fmt.Errorf("register gateway: %w", err)
		}
	}
	r.wrote()
	return missing, nil
}

// allShards reports whether per holds no changes at all (a heartbeat: every shard's copy).
func (r *Redis) allShards(per [][]any) bool {
	for _, c := range per {
		if c != nil {
			return false
		}
	}
	return true
}

// flush writes one batch of changes, in order, one script call per shard touched, publishing
// one event per field created or deleted. It reports whether the heartbeat had been missing.
func (r *Redis) flush(ctx context.Context, batch []change) (bool, error) {
	per := make([][]any, len(r.shards))
	for _, c := range batch {
		ev := protocol.PresenceEvent{Type: protocol.EventJoin, ConnID: c.user.ConnID, User: c.user.User, Gateway: r.id}
		op, value, rejoin := "j", []byte(nil), []byte(nil)
		if c.join {
			value = presenceJSON(c.user)
			re := ev
			re.Reason = protocol.ReasonRejoined
			rejoin, _ = json.Marshal(re)
		} else {
			op, ev.Type, ev.Reason = "l", protocol.EventLeave, c.reason
		}
		b, _ := json.Marshal(ev)
		i := r.shardOf(c.user.User)
		per[i] = append(per[i], op, c.user.ConnID, c.user.User, value, b, rejoin, c.seq)
	}
	missing, err := r.flushShards(ctx, per)
	if err != nil {
		return false, fmt.Errorf("presence: flush %d changes: %w", len(batch), err)
	}
	if r.metrics != nil {
		r.metrics.PresenceWrites.Add(float64(len(batch)))
	}
	return missing, nil
}

// writeBack writes the heartbeat and every live connection (field and index) to its shard:
// after a Redis restart this gateway's connections are there again, publishing nothing; after
// a sweep that removed them while this gateway was alive, each one removed comes back with a
// "rejoined" join. Connections whose join is still queued are left to flush, so no field
// appears before its join event.
func (r *Redis) writeBack(ctx context.Context) error {
	r.mu.Lock()
	queued := make(map[string]bool) // joins still queued: written with their event by flush
	for _, c := range r.pending {
		if c.join {
			queued[c.user.ConnID] = true
		}
	}
	per := make([][]protocol.User, len(r.shards))
	for id, u := range r.live {
		if !queued[id] {
			i := r.shardOf(u.User)
			per[i] = append(per[i], u)
		}
	}
	r.mu.Unlock()

	calls := 2 // the heartbeat and the registration, with several shards
	for _, users := range per {
		calls += len(users)/maxBatch + 1
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(calls)*r.opTimeout) // OpTimeout per round trip
	defer cancel()
	hb := r.heartbeatJSON()
	rejoined := 0
	for i, users := range per {
		for first := true; first || len(users) > 0; first = false {
			n := min(len(users), maxBatch)
			chunk := users[:n]
			users = users[n:]
			last := "0"
			if len(users) == 0 {
				last = "1"
			}
			args := make([]any, 0, 5+4*n)
			args = append(args, hb, r.ttlMS(), r.keys.Events(), r.id, last)
			for _, u := range chunk {
				ev, _ := json.Marshal(protocol.PresenceEvent{Type: protocol.EventJoin, ConnID: u.ConnID,
					User: u.User, Gateway: r.id, Reason: protocol.ReasonRejoined})
				args = append(args, u.ConnID, u.User, presenceJSON(u), ev)
			}
			k, err := writeBackScript.Run(ctx, r.client, r.shardKeys(i, r.shards[i].Swept(r.id)), args...).Int()
			if err != nil {
				return fmt.Errorf("presence: write back %d connections to shard %d: %w", n, i, err)
			}
			rejoined += k
		}
	}
	if len(r.shards) > 1 {
		if err := r.client.Set(ctx, r.keys.Heartbeat(r.id), hb, r.ttl).Err(); err != nil {
			return fmt.Errorf("presence: write back heartbeat: %w", err)
		}
		if err := r.client.SAdd(ctx, r.keys.Gateways(), r.id).Err(); err != nil {
			return fmt.Errorf("presence: register gateway: %w", err)
		}
	}
	r.wrote()
	if rejoined > 0 {
		r.log.Warn("presence: this gateway had been swept while alive; its connections rejoined", "connections", rejoined)
	}
	return nil
}

func presenceJSON(u protocol.User) []byte {
	b, _ := json.Marshal(protocol.Presence{User: u.User, Gateway: u.Gateway, ConnectedAt: u.ConnectedAt})
	return b
}
