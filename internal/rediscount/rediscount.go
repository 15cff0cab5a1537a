// Package rediscount counts what a go-redis client sends, for the tests that bound round trips
// (pkg/presence) and the tools that leave their own reads out of Redis's figures
// (deploy/presencesim). Hook is the one entry point.
package rediscount

import (
	"context"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// Hook is a redis.Hook that counts commands and round trips; add it with AddHook (on a
// Cluster client, on every node through OnNewNode). Its counters may be read at any time from
// any goroutine.
type Hook struct {
	// Singles counts commands sent on their own: one round trip each.
	Singles atomic.Int64
	// Pipelines counts pipelines and transactions: one round trip each.
	Pipelines atomic.Int64
	// Pipelined counts the commands sent in pipelines and transactions.
	Pipelined atomic.Int64
	// Published counts PUBLISH commands, alone or pipelined.
	Published atomic.Int64
}

var _ redis.Hook = (*Hook)(nil)

// Commands is every command sent, alone or pipelined.
func (h *Hook) Commands() int64 { return h.Singles.Load() + h.Pipelined.Load() }

// RoundTrips is every round trip: single commands and pipelines.
func (h *Hook) RoundTrips() int64 { return h.Singles.Load() + h.Pipelines.Load() }

// DialHook does nothing.
func (h *Hook) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook counts one command.
func (h *Hook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.Singles.Add(1)
		h.countPublish(cmd)
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook counts one pipeline and its commands.
func (h *Hook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.Pipelines.Add(1)
		h.Pipelined.Add(int64(len(cmds)))
		for _, c := range cmds {
			h.countPublish(c)
		}
		return next(ctx, cmds)
	}
}

func (h *Hook) countPublish(cmd redis.Cmder) {
	if strings.EqualFold(cmd.Name(), "publish") {
		h.Published.Add(1)
	}
}
