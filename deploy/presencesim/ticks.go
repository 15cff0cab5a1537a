package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/wsgw/wsgw/pkg/protocol"
	"github.com/wsgw/wsgw/pkg/rediskey"
)

// ticksPhase is the length of the ticks phase.
const ticksPhase = 5 * time.Second

// tickRate is how many tick-sized messages a second the steady phase publishes to the
// subscribers: ten times the real ticker's rate, for a larger sample of PUBLISH's cost.
const tickRate = 10

// tickLoad is the pub/sub side of the steady phase: Subscribers connections subscribed to the
// time channel, as every gateway is, and a publisher sending frames shaped like the ticker's.
// PUBLISH costs Redis O(subscribers): the report reads that cost from commandstats.
type tickLoad struct {
	subs     []*redis.PubSub
	received sync.WaitGroup
	cancel   context.CancelFunc
	done     chan struct{}
	sent     int // ticks published, read after done
}

// startTicks subscribes n connections to the time channel and publishes to it until stop.
func (s *sim) startTicks(ctx context.Context, n int) (*tickLoad, error) {
	t := &tickLoad{done: make(chan struct{})}
	ch := rediskey.New(s.prefix).Time()
	for range n {
		ps := s.observer.Subscribe(ctx, ch)
		if _, err := ps.Receive(ctx); err != nil { // the subscription is confirmed
			t.stop()
			return nil, fmt.Errorf("presencesim: subscribe %s: %w", ch, err)
		}
		t.subs = append(t.subs, ps)
		t.received.Go(func() {
			for range ps.Channel() { // drained, so Redis never buffers for it
			}
		})
	}
	ctx, t.cancel = context.WithCancel(ctx)
	go func() {
		defer close(t.done)
		tk := time.NewTicker(time.Second / tickRate)
		defer tk.Stop()
		for seq := int64(1); ; seq++ {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				if s.observer.Publish(ctx, ch, protocol.TimeFrame(seq, time.Second)).Err() == nil {
					t.sent++
				}
			}
		}
	}()
	return t, nil
}

// stop ends the publishing and the subscriptions and returns how many ticks were published.
func (t *tickLoad) stop() int {
	if t.cancel != nil {
		t.cancel()
		<-t.done
	}
	for _, ps := range t.subs {
		_ = ps.Close()
	}
	t.received.Wait()
	return t.sent
}
