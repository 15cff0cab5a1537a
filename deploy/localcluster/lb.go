// HAProxy in front of the gateways: its config rendered by deploy/lbconfig, one process or
// several sharing the port.

package localcluster

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wsgw/wsgw/deploy/lbconfig"
	"github.com/wsgw/wsgw/internal/redisserver"
)

func (c *Cluster) startLB(ctx context.Context) error {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		return fmt.Errorf("localcluster: haproxy: %w", err)
	}
	servers := make([]string, len(c.Gateways))
	for i, g := range c.Gateways {
		servers[i] = g.Addr
	}
	cfgPath := filepath.Join(c.Dir, "haproxy.cfg")
	hc := &http.Client{Timeout: time.Second}
	var lastErr error
	for range startAttempts {
		port := c.opts.LBPort
		if port == 0 {
			if port, err = redisserver.FreePort(); err != nil {
				return err
			}
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		var cfg strings.Builder
		lc := lbconfig.Config{Servers: servers, Bind: addr, MaxConn: MaxConn(),
			PerSourceConns: cmp.Or(c.opts.LBPerSourceConns, lbconfig.LoopbackPerSource),
			PerSourceRate:  cmp.Or(c.opts.LBPerSourceRate, lbconfig.LoopbackPerSource)}
		if c.opts.LBProcs > 1 {
			lc.Threads = 1 // the processes are the parallelism
		}
		if err := lbconfig.Render(&cfg, lc); err != nil {
			return fmt.Errorf("localcluster: %w", err)
		}
		if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
			return fmt.Errorf("localcluster: write haproxy config: %w", err)
		}
		p := c.newProc("haproxy", bin, []string{"-db", "-f", cfgPath}, os.Environ())
		if err := p.Start(); err != nil {
			return err
		}
		c.LB, c.LBAddr, c.LBs = p, addr, []*Proc{p}
		if lastErr = poll(ctx, lbStartTimeout, p, func() error { return httpOK(ctx, hc, "http://"+addr+"/healthz") }); lastErr == nil {
			fmt.Fprintf(c.out, "haproxy on %s pid %d (maxconn %d)\n", addr, p.Pid(), MaxConn())
			return c.startMoreLBs(ctx, bin, cfgPath)
		}
		if p.Running() || c.opts.LBPort != 0 || ctx.Err() != nil || !portClash(p) {
			return lastErr
		}
	}
	return lastErr
}

// startMoreLBs starts HAProxy processes 2..Options.LBProcs on the first one's config and port,
// which HAProxy binds with SO_REUSEPORT.
func (c *Cluster) startMoreLBs(ctx context.Context, bin, cfgPath string) error {
	for i := 2; i <= c.opts.LBProcs; i++ {
		p := c.newProc("haproxy"+strconv.Itoa(i), bin, []string{"-db", "-f", cfgPath}, os.Environ())
		if err := p.Start(); err != nil {
			return err
		}
		c.LBs = append(c.LBs, p)
	}
	if len(c.LBs) == 1 {
		return nil
	}
	// A process that cannot bind or parse its config exits at once. A health check through the
	// port proves nothing about one process (any of them may answer it), so give them time to
	// fail instead.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(300 * time.Millisecond):
	}
	for i, p := range c.LBs[1:] {
		if !p.Running() {
			return fmt.Errorf("localcluster: %s exited at start; log:\n%s", p.Name, p.logTail(2000))
		}
		fmt.Fprintf(c.out, "%s on %s pid %d (maxconn %d, SO_REUSEPORT, process %d of %d)\n", p.Name, c.LBAddr, p.Pid(), MaxConn(), i+2, len(c.LBs))
	}
	return nil
}

// portClash reports whether p's log says its port was taken (between FreePort and its bind).
func portClash(p *Proc) bool {
	tail := p.logTail(1000)
	return strings.Contains(tail, "address already in use") || strings.Contains(tail, "cannot bind socket")
}

// MaxConn is the HAProxy maxconn the cluster renders: lbconfig.MaxConnFor the hard open-file
// limit of this process (HAProxy inherits it), e.g. 9500 under a hard limit of 20000.
func MaxConn() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return lbconfig.MaxConnFor(1024)
	}
	return lbconfig.MaxConnFor(rl.Max)
}
