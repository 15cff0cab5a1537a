package gateway

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgw/wsgw/internal/testkit"
	"github.com/wsgw/wsgw/pkg/protocol"
)

// TestRunAdminAndAuth runs the program with ADMIN_ADDR and AUTH_JWT_SECRET: the operator routes
// move to the admin listener, `gateway token` makes a token the gateway accepts, a missing
// token gets 401, and the page says authentication is on.
func TestRunAdminAndAuth(t *testing.T) {
	addr, admin := freeAddr(t), freeAddr(t)
	env := []string{"GATEWAY_ADDR=" + addr, "ADMIN_ADDR=" + admin, "TICK_INTERVAL=100ms", "AUTH_JWT_SECRET=" + string(testSecret)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, nil, env, &bytes.Buffer{}, &testkit.SyncBuffer{}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	testkit.Eventually(t, 5*time.Second, "/healthz", func() bool {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	for _, path := range []string{"/users", "/metrics", "/debug/pprof/"} {
		if code, _ := testkit.HTTPGet(t, "http://"+addr+path); code != http.StatusNotFound {
			t.Errorf("public %s: %d, want 404", path, code)
		}
		if code, _ := testkit.HTTPGet(t, "http://"+admin+path); code != http.StatusOK {
			t.Errorf("admin %s: %d, want 200", path, code)
		}
	}
	if code, body := testkit.HTTPGet(t, "http://"+addr+"/"); code != 200 || !strings.Contains(body, `<meta name="wsgw-auth" content="bearer">`) {
		t.Errorf("page does not say authentication is on (%d)", code)
	}

	var out, errOut bytes.Buffer
	if err := Run(context.Background(), []string{"token", "-user", "ana", "-ttl", "10m"}, env, &out, &errOut); err != nil {
		t.Fatalf("gateway token: %v %s", err, errOut.String())
	}
	tok := strings.TrimSpace(out.String())
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	if _, resp, err := websocket.Dial(dctx, "ws://"+addr+"/ws", nil); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %v", err)
	}
	c, _, err := websocket.Dial(dctx, "ws://"+addr+"/ws", &websocket.DialOptions{HTTPHeader: bearer(tok)})
	if err != nil {
		t.Fatalf("dial with the printed token: %v", err)
	}
	defer c.CloseNow()
	w := readFrame(t, c)
	if w.Type != protocol.TypeWelcome || w.User != "ana" || w.Exp < time.Now().Add(9*time.Minute).Unix() {
		t.Fatalf("welcome = %+v", w)
	}
	if _, body := testkit.HTTPGet(t, "http://"+admin+"/users"); !strings.Contains(body, `"ana"`) {
		t.Errorf("admin /users lacks ana: %s", body)
	}
}

func TestRunHelpListsAuth(t *testing.T) {
	var out bytes.Buffer
	if err := Run(context.Background(), []string{"-h"}, nil, &out, &out); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"ADMIN_ADDR", "AUTH_JWT_SECRET", "AUTH_JWT_PUBLIC_KEY_FILE", "AUTH_JWKS_URL", "AUTH_JWT_ISSUER", "AUTH_JWT_AUDIENCE", "AUTH_USER_CLAIM", "token -user"} {
		if !strings.Contains(out.String(), v) {
			t.Errorf("-h output lacks %s", v)
		}
	}
}

func TestRunTokenErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"token", "-user", "ana"}, nil, "AUTH_JWT_SECRET"},
		{[]string{"token"}, []string{"AUTH_JWT_SECRET=" + string(testSecret)}, "-user"},
		{[]string{"token", "-user", "a b"}, []string{"AUTH_JWT_SECRET=" + string(testSecret)}, "user"},
		{[]string{"token", "-user", "ana", "-ttl", "-1s"}, []string{"AUTH_JWT_SECRET=" + string(testSecret)}, "-ttl"},
	} {
		err := Run(context.Background(), c.args, c.env, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v %v: err = %v, want one naming %s", c.args, c.env, err, c.want)
		}
	}
}

// TestPageAuthMarker: without authentication the page keeps its marker off, so it shows no
// token field and offers no subprotocol.
func TestPageAuthMarker(t *testing.T) {
	if !bytes.Contains(pageFor(false), []byte(authMeta)) || !bytes.Contains(pageFor(true), []byte(`content="bearer"`)) {
		t.Fatal("index.html lacks the wsgw-auth marker pageFor rewrites")
	}
}
