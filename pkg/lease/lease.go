// Package lease decides which of several tickers publishes. Local always holds (one process,
// nothing to share); Redis holds a lease key with a TTL that only its holder can renew or
// release.
package lease

import "context"

// Lease is a mutual-exclusion lease with a TTL.
//
// Hold is called before every tick: it acquires the lease when free, renews it when held, and
// returns false when another holder has it or the backing store cannot be reached (a holder
// that cannot renew must stop publishing rather than risk two publishers). Release gives the
// lease up at once so a standby can take over without waiting for the TTL.
type Lease interface {
	Hold(ctx context.Context) (bool, error)
	Release(ctx context.Context) error
}

// Local is the lease of a process that is the only publisher: it always holds.
type Local struct{}

// Hold always returns true.
func (Local) Hold(context.Context) (bool, error) { return true, nil }

// Release does nothing.
func (Local) Release(context.Context) error { return nil }

var _ Lease = Local{}
