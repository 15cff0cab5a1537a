// Command gwprof is the gateway with a pprof endpoint, for profiling under load: the same
// gateway.Run as ./gateway (same environment variables), plus net/http/pprof on PPROF_ADDR
// (default 127.0.0.1:6060), a separate listener so the gateway's own routes stay untouched.
//
//	GATEWAY_ADDR=127.0.0.1:8080 gwprof &
//	go tool pprof -top 'http://127.0.0.1:6060/debug/pprof/profile?seconds=10'
package main

import (
	"context"
	"fmt"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof on http.DefaultServeMux
	"os"
	"os/signal"
	"syscall"

	"github.com/wsgw/wsgw/pkg/gateway"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	addr := os.Getenv("PPROF_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6060"
	}
	go func() {
		if err := http.ListenAndServe(addr, nil); err != nil {
			fmt.Fprintln(os.Stderr, "gwprof: pprof listener:", err)
		}
	}()
	if err := gateway.Run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}
