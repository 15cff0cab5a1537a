package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// jwks is the key source of AUTH_JWKS_URL: keyfunc over one jwkset HTTP storage, refreshed in
// the background every JWKSRefresh.
//
// An unknown kid (a key rotated in since the last fetch, or a made-up one) triggers a fetch,
// but at most one per UnknownKIDInterval for the whole process, and never a wait: keyfunc's own
// limiter makes callers queue for it, which would hold every handshake that carries a made-up
// kid for up to a minute. So two keyfuncs share the storage: known never fetches; refetch
// fetches on a miss without a limit of its own, and is only called after this type's
// non-blocking limiter said yes.
type jwks struct {
	known   keyfunc.Keyfunc
	refetch keyfunc.Keyfunc
	now     func() time.Time
	timeout time.Duration
	limiter *rate.Limiter // safe for concurrent use

	cancel context.CancelFunc // stops the background refresh
}

// keyError is a key lookup failure with a reason fit for the client.
type keyError struct{ msg string }

func (e *keyError) Error() string { return e.msg }

func newJWKS(o Options) (*jwks, error) {
	if o.JWKSRefresh <= 0 {
		o.JWKSRefresh = DefaultJWKSRefresh
	}
	if o.UnknownKIDInterval <= 0 {
		o.UnknownKIDInterval = DefaultUnknownKIDInterval
	}
	hc := o.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	ctx, cancel := context.WithCancel(context.Background())
	log := o.Logger
	store, err := jwkset.NewStorageFromHTTP(o.JWKSURL, jwkset.HTTPClientStorageOptions{
		Client:                    hc,
		Ctx:                       ctx,
		HTTPTimeout:               DefaultJWKSTimeout,
		NoErrorReturnFirstHTTPReq: true,
		RefreshErrorHandler: func(_ context.Context, err error) {
			log.Warn("auth: fetch JWKS", "url", o.JWKSURL, "err", err)
		},
		RefreshInterval: o.JWKSRefresh,
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("auth: JWKS %s: %w", o.JWKSURL, err)
	}
	known, err := keyfuncOver(ctx, store, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	refetch, err := keyfuncOver(ctx, store, rate.NewLimiter(rate.Inf, 1))
	if err != nil {
		cancel()
		return nil, err
	}
	return &jwks{
		known: known, refetch: refetch, now: o.Now, timeout: DefaultJWKSTimeout,
		limiter: rate.NewLimiter(rate.Every(o.UnknownKIDInterval), 1),
		cancel:  cancel,
	}, nil
}

// keyfuncOver is a keyfunc reading store; a non-nil onMiss makes a miss fetch the set again.
func keyfuncOver(ctx context.Context, store jwkset.Storage, onMiss *rate.Limiter) (keyfunc.Keyfunc, error) {
	client, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs:          map[string]jwkset.Storage{"jwks": store},
		RefreshUnknownKID: onMiss,
		RateLimitWaitMax:  DefaultJWKSTimeout, // also bounds the fetch itself
	})
	if err != nil {
		return nil, fmt.Errorf("auth: JWKS client: %w", err)
	}
	kf, err := keyfunc.New(keyfunc.Options{Ctx: ctx, Storage: client})
	if err != nil {
		return nil, fmt.Errorf("auth: JWKS keyfunc: %w", err)
	}
	return kf, nil
}

// key returns the key for t, fetching the set again when its kid is unknown and the limiter
// allows.
func (j *jwks) key(ctx context.Context, t *jwt.Token) (any, error) {
	k, err := j.known.KeyfuncCtx(ctx)(t)
	if err == nil {
		return k, nil
	}
	if !errors.Is(err, jwkset.ErrKeyNotFound) {
		return nil, &keyError{msg: "token key not usable for its algorithm"}
	}
	if !j.limiter.AllowN(j.now(), 1) {
		return nil, &keyError{msg: "token key id unknown"}
	}
	ctx, cancel := context.WithTimeout(ctx, j.timeout)
	defer cancel()
	k, err = j.refetch.KeyfuncCtx(ctx)(t)
	if err != nil {
		return nil, &keyError{msg: "token key id unknown (key set fetched again)"}
	}
	return k, nil
}

func (j *jwks) close() { j.cancel() }
