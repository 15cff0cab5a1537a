package main

import (
	"context"
	"log/slog"
	"maps"
	"sync"
)

// logCounter is the stores' logger: it prints nothing (a hundred gateways would drown the
// summary) but counts each message at Info level and above (with its error, if any), so the report shows what the
// stores went through — write failures, write-backs after a missing heartbeat, sweeps.
// Safe for concurrent use by every store.
type logCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func newLogCounter() *logCounter { return &logCounter{n: map[string]int{}} }

func (c *logCounter) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (c *logCounter) Handle(_ context.Context, r slog.Record) error {
	key := r.Level.String() + " " + r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" {
			key += ": " + a.Value.String()
		}
		return true
	})
	c.mu.Lock()
	c.n[key]++
	c.mu.Unlock()
	return nil
}

func (c *logCounter) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *logCounter) WithGroup(string) slog.Handler      { return c }

// counts returns a copy of the counts so far, by "LEVEL message".
func (c *logCounter) counts() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.n)
}
