// Package cli is the part of every command's main that is the same everywhere: Main runs the
// command under a context that SIGINT and SIGTERM cancel and turns its error into exit status 1.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// Main calls run with a context cancelled by SIGINT or SIGTERM. When run fails, Main prints
// "name: error" on stderr (the bare error when name is empty, for errors that already name
// their command) and exits with status 1. flag.ErrHelp is not a failure: -h printed the flags.
func Main(name string, run func(ctx context.Context) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return
	}
	if name != "" {
		fmt.Fprintln(os.Stderr, name+":", err)
	} else {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(1)
}
