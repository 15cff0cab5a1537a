// Package tick is the publishing loop shared by the ticker service and the standalone
// gateway: at every multiple of the interval since the Unix epoch it encodes the time frame
// once and publishes it, while it holds the lease.
//
// Entry point: Run.
package tick

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/wsgw/wsgw/pkg/config"
	"github.com/wsgw/wsgw/pkg/lease"
	"github.com/wsgw/wsgw/pkg/metrics"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// Publish sends one encoded time frame (a broker.Broker's Publish fits).
type Publish func(ctx context.Context, frame []byte) error

// Options configure Run. Zero values mean the documented defaults.
type Options struct {
	// Interval between ticks. Defaults to TICK_INTERVAL's default (pkg/config).
	Interval time.Duration
	// Lease decides whether this process publishes. Defaults to lease.Local (always).
	Lease lease.Lease
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Metrics may be nil.
	Metrics *metrics.Metrics
	// Now defaults to time.Now; tests replace it.
	Now func() time.Time
}

// Run publishes a tick at every interval boundary until ctx is done, then releases the lease
// (with a short timeout of its own, since ctx is already done) and returns nil.
//
// Before each tick it asks the lease; a process that does not hold it (or cannot reach the
// lease store) skips the tick, so a ticker cut off from Redis stops publishing after at most one
// interval. A publish error is logged and the loop goes on: the next tick is a new chance.
func Run(ctx context.Context, publish Publish, o Options) error {
	if o.Interval <= 0 {
		o.Interval = config.TickerDefaults().TickInterval
	}
	if o.Lease == nil {
		o.Lease = lease.Local{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Logger = o.Logger.With("component", "tick")
	if o.Now == nil {
		o.Now = time.Now
	}
	held := false
	defer func() {
		if !held {
			return
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if err := o.Lease.Release(rctx); err != nil {
			o.Logger.Warn("tick: release lease", "err", err)
		} else {
			o.Logger.Info("tick: lease released")
		}
	}()

	last := protocol.TickSeq(o.Now(), o.Interval)
	timer := time.NewTimer(untilNext(o.Now(), o.Interval))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		now := o.Now()
		seq := protocol.TickSeq(now, o.Interval)
		timer.Reset(untilNext(now, o.Interval))
		if seq <= last { // woke early (timer slack, clock step back): wait for the boundary
			continue
		}
		last = seq

		ok, err := o.Lease.Hold(ctx)
		if err != nil && ctx.Err() == nil {
			o.Logger.Warn("tick: hold lease", "err", err)
		}
		if ok != held {
			held = ok
			o.Logger.Info("tick: lease changed", "held", held, "seq", seq)
			if o.Metrics != nil {
				o.Metrics.LeaseChanges.Inc()
				o.Metrics.LeaseHeld.Set(b2f(held))
			}
		}
		if !held {
			continue
		}
		if err := publish(ctx, protocol.TimeFrame(seq, o.Interval)); err != nil {
			if ctx.Err() == nil {
				o.Logger.Warn("tick: publish", "seq", seq, "err", fmt.Errorf("tick: publish %d: %w", seq, err))
			}
			continue
		}
		if o.Metrics != nil {
			o.Metrics.TicksPublished.Inc()
		}
	}
}

// untilNext is the time from now to the next multiple of interval since the epoch.
func untilNext(now time.Time, interval time.Duration) time.Duration {
	ms := interval.Milliseconds()
	next := time.UnixMilli((now.UnixMilli()/ms + 1) * ms)
	return next.Sub(now)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
