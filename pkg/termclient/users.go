package termclient

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/wsgw/wsgw/pkg/protocol"
)

// DefaultUsersURL is the /users endpoint of a gateway started with its defaults.
const DefaultUsersURL = "http://localhost:8080/users"

// Users is `client users`: it walks every page of a gateway's GET /users (following
// next_cursor until it is empty) and prints one line per connection (conn_id, user, gateway,
// connected_at), then the totals of the last page. A connection may be printed twice when it
// moved during the walk (as HSCAN allows); it is printed once here, deduplicated by conn_id.
func Users(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("client users", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rawURL := fs.String("url", DefaultUsersURL, "the gateway's /users `URL` (the admin listener's when ADMIN_ADDR is set)")
	limit := fs.Int("limit", 1000, "connections per page (1–10000)")
	if help, err := parseFlags(fs, args, "client users [-url "+DefaultUsersURL+"] [-limit N]",
		"Prints every online connection of the cluster, walking all pages of /users."); help || err != nil {
		return err
	}
	base, err := url.Parse(*rawURL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") {
		return fmt.Errorf("client users: -url %q: want an http or https URL", *rawURL)
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	seen := make(map[string]bool)
	var last protocol.Users
	for cursor, pages := "", 0; ; pages++ {
		page, err := getPage(ctx, hc, base, cursor, *limit)
		if err != nil {
			return fmt.Errorf("client users: page %d: %w", pages+1, err)
		}
		for _, u := range page.Users {
			if seen[u.ConnID] {
				continue
			}
			seen[u.ConnID] = true
			fmt.Fprintf(stdout, "%s\t%s\t%s\t%s\n", u.ConnID, u.User, u.Gateway, u.ConnectedAt.Format(time.RFC3339Nano))
		}
		last = page
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	fmt.Fprintf(stdout, "# %d connections listed; count %d, distinct users %d\n", len(seen), last.Count, last.DistinctUsers)
	return nil
}

func getPage(ctx context.Context, hc *http.Client, base *url.URL, cursor string, limit int) (protocol.Users, error) {
	u := *base
	q := u.Query()
	q.Set("limit", strconv.Itoa(limit))
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return protocol.Users{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return protocol.Users{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return protocol.Users{}, fmt.Errorf("GET %s: %s: %s", u.Redacted(), resp.Status, strings.TrimSpace(string(b)))
	}
	var p protocol.Users
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		return protocol.Users{}, fmt.Errorf("GET %s: decode: %w", u.Redacted(), err)
	}
	return p, nil
}
