package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgw/wsgw/deploy/localcluster"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// bg is the context of the test's own Redis commands, each bounded by the client's timeouts.
var bg = context.Background()

// readPresence reads the whole presence hash, each value decoded strictly: exactly the fields
// user, gateway and connected_at.
func readPresence(rc redis.UniversalClient, key string) (map[string]protocol.Presence, error) {
	all, err := rc.HGetAll(bg, key).Result()
	if err != nil {
		return nil, fmt.Errorf("HGETALL %s: %w", key, err)
	}
	out := make(map[string]protocol.Presence, len(all))
	for id, v := range all {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal([]byte(v), &fields); err != nil {
			return nil, fmt.Errorf("%s field %s: value %q is not a JSON object: %w", key, id, v, err)
		}
		if keys := sortedKeys(fields); !slices.Equal(keys, []string{"connected_at", "gateway", "user"}) {
			return nil, fmt.Errorf("%s field %s: value %s has fields %v, want connected_at, gateway, user", key, id, v, keys)
		}
		var p protocol.Presence
		if err := json.Unmarshal([]byte(v), &p); err != nil {
			return nil, fmt.Errorf("%s field %s: value %s: %w", key, id, v, err)
		}
		out[id] = p
	}
	return out, nil
}

// presence is readPresence that fails the test on an error.
func presence(t *testing.T, rc redis.UniversalClient, key string) map[string]protocol.Presence {
	t.Helper()
	p, err := readPresence(rc, key)
	if err != nil {
		t.Fatal(err)
	}
	return p
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

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// connIDs are the first welcomes' conn_ids of clients.
func connIDs(cs ...*client) []string {
	ids := make([]string, len(cs))
	for i, c := range cs {
		ids[i] = c.welcome.ConnID
	}
	return ids
}

// hasAll reports an error when any of ids is missing from the hash.
func hasAll(hash map[string]protocol.Presence, ids []string) error {
	for _, id := range ids {
		if _, ok := hash[id]; !ok {
			return fmt.Errorf("field %s missing (have %d fields)", id, len(hash))
		}
	}
	return nil
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

// liveConns is the set of connection ids the clients hold now: the last welcome of each real
// client and the current connection of each in-process one.
func liveConns(terms []*termClient, cs []*client) map[string]bool {
	m := map[string]bool{}
	for _, tc := range terms {
		ws := tc.welcomes()
		m[ws[len(ws)-1].ID] = true
	}
	for _, cl := range cs {
		if cur := cl.current(); cur != nil {
			m[cur.ID] = true
		}
	}
	return m
}

// gatewayIDs is the set of the cluster's gateway ids.
func gatewayIDs(c *localcluster.Cluster) map[string]bool {
	m := make(map[string]bool, len(c.Gateways))
	for _, g := range c.Gateways {
		m[g.ID] = true
	}
	return m
}

// presenceMatches checks that ws:presence holds exactly the connections in live, n of them,
// each on one of gateways.
func presenceMatches(rc redis.UniversalClient, live, gateways map[string]bool, n int) error {
	if len(live) != n {
		return fmt.Errorf("%d clients connected, want %d", len(live), n)
	}
	p, err := readPresence(rc, keys.Presence())
	if err != nil {
		return err
	}
	var stale, missing []string
	for id, v := range p {
		if !live[id] || !gateways[v.Gateway] {
			stale = append(stale, id+" ("+v.User+" on "+v.Gateway+")")
		}
	}
	for id := range live {
		if _, ok := p[id]; !ok {
			missing = append(missing, id)
		}
	}
	if len(p) != n || len(stale) > 0 || len(missing) > 0 {
		return fmt.Errorf("HLEN ws:presence = %d, want %d; stale %v; missing %v", len(p), n, stale, missing)
	}
	return nil
}

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

// connRef names one connection as its welcome did.
type connRef struct{ ID, User, Gateway string }

// refs are the first connections of clients.
func refs(cs ...*client) []connRef {
	out := make([]connRef, len(cs))
	for i, c := range cs {
		out[i] = connRef{c.welcome.ConnID, c.welcome.User, c.welcome.Gateway}
	}
	return out
}

// checkLeaves waits up to timeout for a leave about each of conns, then checks that each got
// exactly one leave, with reason and the user and gateway of its welcome.
func (l *eventLog) checkLeaves(t *testing.T, reason string, timeout time.Duration, conns ...connRef) {
	t.Helper()
	leaves := func(id string) []event {
		var out []event
		for _, e := range l.about([]string{id}) {
			if e.Type == protocol.EventLeave {
				out = append(out, e)
			}
		}
		return out
	}
	waitFor(t, timeout, "a leave ("+reason+") for each connection", func() error {
		for _, c := range conns {
			if len(leaves(c.ID)) == 0 {
				return fmt.Errorf("no leave event for %s", c.ID)
			}
		}
		return nil
	})
	for _, c := range conns {
		mine := leaves(c.ID)
		if len(mine) != 1 {
			t.Errorf("conn %s: %d leaves, want exactly one (%s): %+v", c.ID, len(mine), reason, mine)
			continue
		}
		if e := mine[0]; e.Reason != reason || e.User != c.User || e.Gateway != c.Gateway {
			t.Errorf("conn %s: event %s, want leave of user %s on %s with reason %s", c.ID, e.Raw, c.User, c.Gateway, reason)
		}
	}
}

// jsonStrict decodes v into dst, refusing unknown fields.
func jsonStrict(v string, dst any) error {
	dec := json.NewDecoder(strings.NewReader(v))
	dec.DisallowUnknownFields()
	return dec.Decode(dst)
}
