// Command client is the terminal client of the gateway: it prints every frame it receives and
// sends each line typed on standard input (10 asks for F(10)). See pkg/termclient.
//
//	client [-url ws://localhost:8080/ws] [-user NAME] [-token JWT | -token-cmd COMMAND]
//	client users [-url http://localhost:8080/users] [-limit N]   (every online connection, all pages)
//
// WSGW_TOKEN, when set, is the default of -token.
package main

import (
	"context"
	"os"

	"github.com/wsgw/wsgw/internal/cli"
	"github.com/wsgw/wsgw/pkg/termclient"
)

func main() {
	cli.Main("", func(ctx context.Context) error {
		if len(os.Args) > 1 && os.Args[1] == "users" {
			return termclient.Users(ctx, os.Args[2:], os.Stdout, os.Stderr)
		}
		args := os.Args[1:]
		if tok := os.Getenv("WSGW_TOKEN"); tok != "" {
			args = append([]string{"-token", tok}, args...) // a -token given on the command line wins
		}
		return termclient.Run(ctx, args, os.Stdin, os.Stdout, os.Stderr)
	})
}
