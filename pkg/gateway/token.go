package gateway

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/wsgw/wsgw/pkg/auth"
	"github.com/wsgw/wsgw/pkg/config"
)

// printToken is `gateway token -user NAME [-ttl 1h]`: it prints an HS256 token signed with
// AUTH_JWT_SECRET, with the configured user claim, issuer and audience, for development and
// tests.
func printToken(args, environ []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gateway token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	user := fs.String("user", "", "the user the token names (required)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("token: %w", err)
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("token: unexpected argument %q", fs.Arg(0))
	case *user == "":
		return errors.New("token: -user is required")
	case *ttl <= 0:
		return fmt.Errorf("token: -ttl must be above 0, got %v", *ttl)
	}
	cfg, err := config.LoadGateway(environ)
	if err != nil {
		return err
	}
	if cfg.Auth.JWTSecret == "" {
		return errors.New("token: AUTH_JWT_SECRET is not set; it signs the token")
	}
	tok, err := auth.Sign([]byte(cfg.Auth.JWTSecret), auth.TokenSpec{
		User: *user, TTL: *ttl, UserClaim: cfg.Auth.UserClaim, Issuer: cfg.Auth.JWTIssuer, Audience: cfg.Auth.JWTAudience,
	})
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
