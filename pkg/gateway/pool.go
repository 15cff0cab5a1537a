package gateway

import (
	"context"
	"sync"
	"time"

	"github.com/wsgw/wsgw/pkg/fib"
	"github.com/wsgw/wsgw/pkg/metrics"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// job is one Fibonacci request waiting for a worker.
type job struct {
	c   *conn
	req protocol.Request
}

// pool computes Fibonacci numbers on a fixed number of workers, off the connections' read
// loops (big-number math grows stacks, and stack growth is sticky). Its queue is bounded: when
// full, requests are refused with busy instead of piling up.
type pool struct {
	jobs  chan job
	cache *fib.Cache
	m     *metrics.Metrics
	wg    sync.WaitGroup
}

func newPool(ctx context.Context, workers, queue int, cache *fib.Cache, m *metrics.Metrics) *pool {
	p := &pool{jobs: make(chan job, queue), cache: cache, m: m}
	for range workers {
		p.wg.Go(func() { p.work(ctx) })
	}
	return p
}

// submit queues j, or returns false at once when the queue is full.
func (p *pool) submit(j job) bool {
	select {
	case p.jobs <- j:
		return true
	default:
		return false
	}
}

func (p *pool) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-p.jobs:
			if j.c.ended.Load() { // the requester left: abandon
				p.m.FibResults.WithLabelValues("abandoned").Inc()
				continue
			}
			start := time.Now()
			result := p.cache.Decimal(j.req.N)
			frame := protocol.EncodeFib(j.req.ID, j.req.N, result)
			p.m.FibDuration.Observe(time.Since(start).Seconds())
			p.m.FibResults.WithLabelValues("ok").Inc()
			j.c.send(frame, protocol.TypeFib)
		}
	}
}

// wait returns once every worker has stopped (after the server context is canceled).
func (p *pool) wait() { p.wg.Wait() }
