// Package tick is the publishing loop shared by the ticker service and the standalone
// gateway: at every multiple of the interval since the Unix epoch it encodes the time frame
// once and publishes it, while it holds the lease.
//
// Entry point: Run.
package tick

import (
	"context"
	"errors"
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
// lease store, or whose clock the lease finds off) skips the tick, so a ticker cut off from
// Redis stops publishing after at most one interval. A clock that steps back never stops the
// loop: it asks the lease at the next boundary its clock shows. A publish error is logged and
// the loop goes on: the next tick is a new chance. A lasting lease error is logged once.
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
	var lastErr string // the hold error last logged, so a lasting one is logged once
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		now := o.Now()
		seq := protocol.TickSeq(now, o.Interval)
		timer.Reset(untilNext(now, o.Interval))
		if seq == last { // woke early (timer slack): wait for the boundary
			continue
		}
		if seq < last {
			// The clock stepped back. Go on as the clock says rather than wait for it to catch up
			// (which, for a big step, would silence this leader without a word): the lease's
			// clock check makes a leader whose clock is off step aside, and gateways drop seqs
			// they have already forwarded.
			o.Logger.Warn("tick: clock stepped back", "seq", seq, "previous", last,
				"by", protocol.TickTime(last, o.Interval).Sub(now).Round(time.Millisecond))
		}
		last = seq

		ok, err := o.Lease.Hold(ctx)
		switch {
		case err != nil && ctx.Err() == nil && err.Error() != lastErr:
			// Clock-skew messages carry the offset, which moves a little each time: compare
			// the kind, not the text, for those.
			lastErr = err.Error()
			if errors.Is(err, lease.ErrClockSkew) {
				lastErr = lease.ErrClockSkew.Error()
			}
			o.Logger.Warn("tick: not holding the lease", "seq", seq, "err", err)
		case err == nil && lastErr != "":
			lastErr = ""
			o.Logger.Info("tick: lease check ok again", "seq", seq, "held", ok)
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
		if cur := protocol.TickSeq(o.Now(), o.Interval); cur > seq {
			// Hold outlasted the boundary (a slow or returning Redis): publish the tick of
			// now, not a stale one that would reach clients late and out of step.
			seq, last = cur, cur
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
