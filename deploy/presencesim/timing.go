package main

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/wsgw/wsgw/deploy/loadgen"
)

// timings are the client-side durations of the gateways' Redis round trips in one phase:
// pipelines (the presence writer's batches, heartbeats and write-backs), scripts (sweep
// chunks) and other single commands (the sweeper's SMEMBERS, ...).
type timings struct {
	pipeline, script, command loadgen.Histogram
}

func (t *timings) summary() map[string]loadgen.Latency {
	m := map[string]loadgen.Latency{}
	for name, h := range map[string]*loadgen.Histogram{"pipeline": &t.pipeline, "script": &t.script, "command": &t.command} {
		if s := h.Snapshot(); s.N > 0 {
			m[name] = s.Summary()
		}
	}
	return m
}

// timingHook is a go-redis hook on every simulated gateway's client, recording each
// successful round trip into the current phase's timings. It changes nothing the store does.
type timingHook struct{ cur atomic.Pointer[timings] }

var _ redis.Hook = (*timingHook)(nil)

// reset starts a new set of timings and returns it.
func (h *timingHook) reset() *timings {
	t := &timings{}
	h.cur.Store(t)
	return t
}

// attach adds the hook to c. A Cluster client's own hooks do not see the pipelines the store
// sends straight to the node owning its slot, so there the hook goes on every node client.
func (h *timingHook) attach(c redis.UniversalClient) {
	switch c := c.(type) {
	case *redis.ClusterClient:
		c.OnNewNode(func(n *redis.Client) { n.AddHook(h) })
	case *redis.Client:
		c.AddHook(h)
	}
}

func (h *timingHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func ok(err error) bool { return err == nil || errors.Is(err, redis.Nil) }

func (h *timingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmd)
		if t := h.cur.Load(); t != nil && ok(err) {
			if isScript(cmd.Name()) {
				t.script.Record(time.Since(start))
			} else {
				t.command.Record(time.Since(start))
			}
		}
		return err
	}
}

func (h *timingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmds)
		if t := h.cur.Load(); t != nil && ok(err) {
			t.pipeline.Record(time.Since(start))
		}
		return err
	}
}
