// The gateways: started concurrently on free ports, each until its /readyz answers 200.

package localcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/wsgw/wsgw/pkg/config"
)

func (c *Cluster) startGateways(ctx context.Context) error {
	c.Gateways = make([]*Gateway, c.opts.Gateways)
	errs := make([]error, len(c.Gateways))
	var wg sync.WaitGroup
	for i := range c.Gateways {
		wg.Go(func() { errs[i] = c.startGateway(ctx, i) })
	}
	wg.Wait()
	// Drop the slots that never started, so Stop and the caller see only real processes.
	var started []*Gateway
	for _, g := range c.Gateways {
		if g != nil {
			started = append(started, g)
		}
	}
	c.Gateways = started
	return errors.Join(errs...)
}

// startGateway starts gateway i on a free port and waits until it is ready, trying another port
// when the process exits first (the free port was taken meanwhile).
func (c *Cluster) startGateway(ctx context.Context, i int) error {
	id := "gw" + strconv.Itoa(i+1)
	var lastErr error
	for range startAttempts {
		addr, _, err := freeAddr()
		if err != nil {
			return err
		}
		g := &Gateway{ID: id, Addr: addr, Proc: c.newProc(id, filepath.Join(c.bin, "gateway"), nil,
			c.env("GATEWAY_ADDR="+addr, "GATEWAY_ID="+id))}
		if err := g.Start(); err != nil {
			return err
		}
		c.Gateways[i] = g
		if lastErr = c.WaitReady(ctx, g); lastErr == nil {
			fmt.Fprintf(c.out, "%s on %s pid %d\n", id, addr, g.Pid())
			return nil
		}
		if g.Running() || ctx.Err() != nil || !portClash(g.Proc) {
			return lastErr // not a port clash: it runs but is not ready, or failed otherwise
		}
	}
	return lastErr
}

// WaitReady polls the gateway's /readyz until it answers 200. It fails when ctx ends, after 30 s,
// or when the gateway exits.
func (c *Cluster) WaitReady(ctx context.Context, g *Gateway) error {
	hc := &http.Client{Timeout: time.Second}
	return poll(ctx, readyTimeout, g.Proc, func() error { return httpOK(ctx, hc, "http://"+g.Addr+"/readyz") })
}

func httpOK(ctx context.Context, hc *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// GatewayByID returns the gateway whose ID is id, or nil.
func (c *Cluster) GatewayByID(id string) *Gateway {
	for _, g := range c.Gateways {
		if g.ID == id {
			return g
		}
	}
	return nil
}

// ShutdownTimeout is the gateways' SHUTDOWN_TIMEOUT as they see it (the inherited environment,
// then Options.Env), or pkg/config's default when that does not parse.
func (c *Cluster) ShutdownTimeout() time.Duration {
	if cfg, err := config.LoadGateway(append(os.Environ(), c.opts.Env...)); err == nil {
		return cfg.ShutdownTimeout
	}
	cfg, _ := config.LoadGateway(nil)
	return cfg.ShutdownTimeout
}
