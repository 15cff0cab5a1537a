package presence

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/wsgw/wsgw/pkg/protocol"
)

// maxScans bounds the HSCAN calls behind one page (an HSCAN may return nothing for a sparse
// table): past it the page is returned short, with a cursor to go on.
const maxScans = 64

// cursor is a position in the walk over the shards: shard, HSCAN cursor in it, and the last
// conn_id already returned from that HSCAN batch (when a page ended inside one). Its text is
// "shard:scan" or "shard:scan:conn_id".
type cursor struct {
	shard int
	scan  uint64
	after string
}

func (c cursor) String() string {
	s := strconv.Itoa(c.shard) + ":" + strconv.FormatUint(c.scan, 10)
	if c.after != "" {
		s += ":" + c.after
	}
	return s
}

func parseCursor(s string, shards int) (cursor, error) {
	if s == "" {
		return cursor{}, nil
	}
	parts := strings.SplitN(s, ":", 3)
	if len(parts) < 2 {
		return cursor{}, fmt.Errorf("presence: cursor %q: %w", s, ErrBadCursor)
	}
	shard, err1 := strconv.Atoi(parts[0])
	scan, err2 := strconv.ParseUint(parts[1], 10, 64)
	if err1 != nil || err2 != nil || shard < 0 || shard >= shards {
		return cursor{}, fmt.Errorf("presence: cursor %q: %w", s, ErrBadCursor)
	}
	c := cursor{shard: shard, scan: scan}
	if len(parts) == 3 {
		c.after = parts[2]
	}
	return c, nil
}

// Page walks the shards' hashes with HSCAN (never one command over a whole hash), COUNT the
// room left in the page. A page ends before an HSCAN batch that does not fit, so the next page
// repeats that batch whole: HSCAN's own guarantee (everything present throughout a walk is
// returned) then holds page by page. Only a batch larger than a whole page is cut; the cursor
// then remembers the last conn_id returned, and the next page repeats that HSCAN with the same
// COUNT (the page is empty both times) and skips through that conn_id, or, if it has left
// meanwhile, returns the whole batch again: a repeat, never a miss.
// Count and Distinct are the sums of the shards' HLEN, read in the same round trip as the
// page's first HSCAN.
func (r *Redis) Page(ctx context.Context, cur string, limit int) (Page, error) {
	limit = clampLimit(limit)
	c, err := parseCursor(cur, len(r.shards))
	if err != nil {
		return Page{}, err
	}
	var p Page
	if err := r.count(ctx, &p); err != nil {
		return Page{}, err
	}
	p.Users = make([]protocol.User, 0, min(limit, 1024))
	for range maxScans {
		room := limit - len(p.Users)
		fields, next, err := r.client.HScan(ctx, r.shards[c.shard].Presence(), c.scan, "", int64(room)).Result()
		if err != nil {
			return Page{}, fmt.Errorf("presence: list shard %d: %w", c.shard, err)
		}
		pairs := fields
		if c.after != "" {
			for i := 0; i+1 < len(fields); i += 2 {
				if fields[i] == c.after {
					pairs = fields[i+2:]
					break
				}
			}
		}
		if len(pairs)/2 > room {
			if len(p.Users) > 0 { // the next page repeats this batch whole
				p.NextCursor = c.String()
				Sort(p.Users)
				return p, nil
			}
			for i := 0; i+1 < len(pairs) && len(p.Users) < limit; i += 2 {
				if u, ok := decodeUser(pairs[i], pairs[i+1]); ok {
					p.Users = append(p.Users, u)
				}
				c.after = pairs[i]
			}
			p.NextCursor = c.String()
			Sort(p.Users)
			return p, nil
		}
		c.after = ""
		for i := 0; i+1 < len(pairs); i += 2 {
			if u, ok := decodeUser(pairs[i], pairs[i+1]); ok {
				p.Users = append(p.Users, u)
			}
		}
		c.scan = next
		if next == 0 {
			c.shard++
			c.scan = 0
			if c.shard == len(r.shards) {
				break // the last page
			}
		}
		if len(p.Users) == limit {
			p.NextCursor = c.String()
			break
		}
	}
	if c.shard < len(r.shards) && p.NextCursor == "" {
		p.NextCursor = c.String() // maxScans reached: a short page
	}
	Sort(p.Users)
	return p, nil
}

// count fills p's totals: HLEN of every shard's hashes, pipelined.
func (r *Redis) count(ctx context.Context, p *Page) error {
	pipe := r.client.Pipeline()
	conns := make([]func() int64, len(r.shards))
	users := make([]func() int64, len(r.shards))
	for i, s := range r.shards {
		conns[i] = pipe.HLen(ctx, s.Presence()).Val
		users[i] = pipe.HLen(ctx, s.Users()).Val
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("presence: count: %w", err)
	}
	for i := range r.shards {
		p.Count += int(conns[i]())
		p.Distinct += int(users[i]())
	}
	return nil
}

// decodeUser reads one field of a presence hash; values that are not presence JSON are
// skipped.
func decodeUser(id, v string) (protocol.User, bool) {
	var pr protocol.Presence
	if json.Unmarshal([]byte(v), &pr) != nil {
		return protocol.User{}, false
	}
	return protocol.User{ConnID: id, User: pr.User, Gateway: pr.Gateway, ConnectedAt: pr.ConnectedAt}, true
}

// List returns every connection of the cluster, walking all pages, ordered by Sort.
func (r *Redis) List(ctx context.Context) ([]protocol.User, error) { return listAll(ctx, r) }
