// Command gateway is the WebSocket gateway. Run `gateway -h` for its settings.
package main

import (
	"context"
	"os"

	"github.com/wsgw/wsgw/internal/cli"
	"github.com/wsgw/wsgw/pkg/gateway"
)

func main() {
	cli.Main("gateway", func(ctx context.Context) error {
		return gateway.Run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	})
}
