package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgw/wsgw/pkg/protocol"
)

// errStop, wrapped in a waitFor condition's error, ends the wait at once with a failure.
var errStop = errors.New("giving up")

// waitFor polls cond every 50ms until it returns nil and returns how long that took; after
// timeout (or on an errStop) it fails the test with the last error.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if errors.Is(err, errStop) || time.Since(start) > timeout {
			t.Fatalf("%s: not after %v: %v", what, time.Since(start).Round(time.Millisecond), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// bg is the context of the test's own Redis commands, each bounded by the client's timeouts.
var bg = context.Background()

// event is one presence event as received.
type event struct {
	protocol.PresenceEvent
	Raw string
	At  time.Time
}

// eventLog collects every message of a presence events channel from the moment Redis
// confirmed the subscription.
type eventLog struct {
	mu     sync.Mutex
	events []event
	bad    []string // messages that are not valid event JSON
}

// subscribeEvents subscribes to channel and returns once Redis has confirmed it.
func subscribeEvents(t *testing.T, rc redis.UniversalClient, channel string) *eventLog {
	t.Helper()
	ps := rc.Subscribe(bg, channel)
	ctx, cancel := context.WithTimeout(bg, 5*time.Second)
	defer cancel()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatalf("subscribe %s: %v", channel, err)
	}
	l := &eventLog{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range ps.Channel(redis.WithChannelSize(10000)) {
			at := time.Now()
			var ev protocol.PresenceEvent
			err := jsonStrict(m.Payload, &ev)
			l.mu.Lock()
			if err != nil || ev.ConnID == "" || ev.Gateway == "" ||
				(ev.Type != protocol.EventJoin && ev.Type != protocol.EventLeave) {
				l.bad = append(l.bad, m.Payload)
			} else {
				l.events = append(l.events, event{PresenceEvent: ev, Raw: m.Payload, At: at})
			}
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ps.Close()
		<-done
	})
	return l
}

func (l *eventLog) all() []event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]event(nil), l.events...)
}

func (l *eventLog) invalid() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.bad...)
}

// about returns the events whose conn_id is in ids.
func (l *eventLog) about(ids []string) []event {
	var out []event
	for _, e := range l.all() {
		if slices.Contains(ids, e.ConnID) {
			out = append(out, e)
		}
	}
	return out
}

// presence reads the whole presence hash, each value decoded strictly: exactly the fields
// user, gateway and connected_at.
func presence(t *testing.T, rc redis.UniversalClient, key string) map[string]protocol.Presence {
	t.Helper()
	all, err := rc.HGetAll(bg, key).Result()
	if err != nil {
		t.Fatalf("HGETALL %s: %v", key, err)
	}
	out := make(map[string]protocol.Presence, len(all))
	for id, v := range all {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal([]byte(v), &fields); err != nil {
			t.Fatalf("%s field %s: value %q is not a JSON object: %v", key, id, v, err)
		}
		if keys := sortedKeys(fields); !slices.Equal(keys, []string{"connected_at", "gateway", "user"}) {
			t.Errorf("%s field %s: value %s has fields %v, want connected_at, gateway, user", key, id, v, keys)
		}
		var p protocol.Presence
		if err := json.Unmarshal([]byte(v), &p); err != nil {
			t.Fatalf("%s field %s: value %s: %v", key, id, v, err)
		}
		out[id] = p
	}
	return out
}

// heartbeat reads a heartbeat key, decoded strictly, and its remaining TTL.
func heartbeat(t *testing.T, rc redis.UniversalClient, key string) (protocol.Heartbeat, time.Duration, error) {
	t.Helper()
	v, err := rc.Get(bg, key).Result()
	if err != nil {
		return protocol.Heartbeat{}, 0, fmt.Errorf("GET %s: %w", key, err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal([]byte(v), &fields); err != nil {
		t.Fatalf("%s: value %q is not a JSON object: %v", key, v, err)
	}
	if keys := sortedKeys(fields); !slices.Equal(keys, []string{"addr", "connections", "started_at"}) {
		t.Errorf("%s: value %s has fields %v, want addr, connections, started_at", key, v, keys)
	}
	var hb protocol.Heartbeat
	if err := json.Unmarshal([]byte(v), &hb); err != nil {
		t.Fatalf("%s: value %s: %v", key, v, err)
	}
	ttl, err := rc.PTTL(bg, key).Result()
	if err != nil {
		return hb, 0, fmt.Errorf("PTTL %s: %w", key, err)
	}
	return hb, ttl, nil
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// connIDs are the welcomes' conn_ids of clients.
func connIDs(cs ...*wsClient) []string {
	ids := make([]string, len(cs))
	for i, c := range cs {
		ids[i] = c.welcome.ConnID
	}
	return ids
}

// hasNone reports an error when any of ids is a field of the hash.
func hasNone(hash map[string]protocol.Presence, ids []string) error {
	for _, id := range ids {
		if _, ok := hash[id]; ok {
			return fmt.Errorf("field %s still present", id)
		}
	}
	return nil
}

// checkLeaves checks that events hold exactly one event per id in ids, a leave with reason,
// user and gateway as the welcome said.
func checkLeaves(t *testing.T, events []event, reason string, clients ...*wsClient) {
	t.Helper()
	for _, c := range clients {
		var mine []event
		for _, e := range events {
			if e.ConnID == c.welcome.ConnID {
				mine = append(mine, e)
			}
		}
		if len(mine) != 1 {
			t.Errorf("conn %s: %d events, want exactly one leave (%s): %+v", c.welcome.ConnID, len(mine), reason, mine)
			continue
		}
		e := mine[0]
		if e.Type != protocol.EventLeave || e.Reason != reason || e.User != c.welcome.User || e.Gateway != c.welcome.Gateway {
			t.Errorf("conn %s: event %s, want leave of user %s on %s with reason %s", c.welcome.ConnID, e.Raw,
				c.welcome.User, c.welcome.Gateway, reason)
		}
	}
}

// jsonStrict decodes v into dst, refusing unknown fields.
func jsonStrict(v string, dst any) error {
	dec := json.NewDecoder(strings.NewReader(v))
	dec.DisallowUnknownFields()
	return dec.Decode(dst)
}
