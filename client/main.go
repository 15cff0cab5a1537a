// Command client is the terminal client of the gateway: it prints every frame it receives and
// sends each line typed on standard input (10 asks for F(10)). See pkg/termclient.
//
//	client [-url ws://localhost:8080/ws] [-user NAME]
//	client users [-url http://localhost:8080/users] [-limit N]   (every online connection, all pages)
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/wsgw/wsgw/pkg/termclient"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	if len(os.Args) > 1 && os.Args[1] == "users" {
		err = termclient.Users(ctx, os.Args[2:], os.Stdout, os.Stderr)
	} else {
		err = termclient.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	}
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
