package e2e

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgw/wsgw/deploy/localcluster"
	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/auth"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// TestAuthThroughHAProxy runs the cluster with authentication on: the load balancer refuses
// /users, /metrics and /debug/ (percent-encoded too) while the gateways behind it still serve
// them, /ws without a token is 401 and with one works, for a Go client and for wscat -H. Before
// the template's deny rule, /users and /metrics through HAProxy answered 200.
func TestAuthThroughHAProxy(t *testing.T) {
	const secret = "e2e-secret-e2e-secret-e2e-secret"
	c := startCluster(t, localcluster.Options{Env: []string{"AUTH_JWT_SECRET=" + secret}})
	for _, path := range []string{"/users", "/metrics", "/debug/pprof/", "/%75sers", "/users?limit=1"} {
		if code, _ := testkit.HTTPGet(t, "http://"+c.LBAddr+path); code != http.StatusForbidden {
			t.Errorf("%s through HAProxy: %d, want 403", path, code)
		}
	}
	if code, _ := testkit.HTTPGet(t, "http://"+c.Gateways[0].Addr+"/users"); code != http.StatusOK {
		t.Errorf("/users on a gateway itself: %d, want 200 (the refusal is the load balancer's)", code)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, resp, err := websocket.Dial(ctx, "ws://"+c.LBAddr+"/ws", nil); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token through HAProxy: %v", err)
	}
	tok, err := auth.Sign([]byte(secret), auth.TokenSpec{User: "ana", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	conn, _, err := websocket.Dial(ctx, "ws://"+c.LBAddr+"/ws", &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}},
	})
	if err != nil {
		t.Fatalf("token through HAProxy: %v", err)
	}
	defer conn.CloseNow()
	_, b, err := conn.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if w, _ := protocol.Decode(b); w.Type != protocol.TypeWelcome || w.User != "ana" || w.Exp == 0 {
		t.Fatalf("welcome = %s", b)
	}

	wscat := testkit.Need(t, "wscat")
	output, _ := startWscat(t, wscat, "-c", "ws://"+c.LBAddr+"/ws", "-H", "Authorization: Bearer "+tok, "-x", "10", "-w", "2")
	waitFor(t, 15*time.Second, "wscat -H: F(10) = 55", func() error {
		for _, f := range jsonFrames(output()) {
			if f.Type == protocol.TypeFib && f.Result == "55" {
				return nil
			}
		}
		return errors.New("no F(10) = 55 from wscat yet")
	})
	if out := output(); !strings.Contains(out, `"user":"ana"`) {
		t.Fatalf("wscat -H: not welcomed as ana; output:\n%s", out)
	}
}
