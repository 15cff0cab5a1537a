package auth

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/wsgw/wsgw/pkg/protocol"
)

func TestFromRequest(t *testing.T) {
	const tok = "aaa.bbb.ccc"
	cases := []struct {
		name    string
		header  http.Header
		want    string
		viaSub  bool
		wantErr string
	}{
		{"bearer", http.Header{"Authorization": {"Bearer " + tok}}, tok, false, ""},
		{"bearer lower case, spaces", http.Header{"Authorization": {"  bearer   " + tok + " "}}, tok, false, ""},
		{"subprotocol", http.Header{"Sec-Websocket-Protocol": {"wsgw.bearer, " + tok}}, tok, true, ""},
		{"subprotocol split over headers", http.Header{"Sec-Websocket-Protocol": {"chat", "wsgw.bearer", tok}}, tok, true, ""},
		{"header wins", http.Header{"Authorization": {"Bearer " + tok}, "Sec-Websocket-Protocol": {"wsgw.bearer, x.y.z"}}, tok, false, ""},
		{"nothing", http.Header{}, "", false, "missing"},
		{"other subprotocols", http.Header{"Sec-Websocket-Protocol": {"chat, superchat"}}, "", false, "missing"},
		{"basic", http.Header{"Authorization": {"Basic YWxhZGRpbjpvcGVuc2VzYW1l"}}, "", false, "Bearer"},
		{"bearer alone", http.Header{"Authorization": {"Bearer"}}, "", false, "missing"},
		{"two headers", http.Header{"Authorization": {"Bearer " + tok, "Bearer " + tok}}, "", false, "more than one"},
		{"subprotocol without token", http.Header{"Sec-Websocket-Protocol": {"wsgw.bearer"}}, "", true, "followed by"},
		{"bad characters", http.Header{"Authorization": {"Bearer a.b.c d"}}, "", false, "malformed"},
		{"too long", http.Header{"Authorization": {"Bearer " + strings.Repeat("a", protocol.MaxTokenLen+1)}}, "", false, "longer than"},
	}
	for _, c := range cases {
		got, viaSub, err := FromRequest(c.header)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%s: err = %v, want %q", c.name, err, c.wantErr)
			}
			continue
		}
		if err != nil || got != c.want || viaSub != c.viaSub {
			t.Errorf("%s: = %q, %v, %v; want %q, %v", c.name, got, viaSub, err, c.want, c.viaSub)
		}
	}
	if _, _, err := FromRequest(http.Header{}); !errors.Is(err, ErrNoToken) {
		t.Fatalf("no token: %v is not ErrNoToken", err)
	}
}

// FuzzFromRequest: no header panics the extraction; a token it returns is non-empty, bounded,
// holds only JWT characters, and is found again when sent the other way.
func FuzzFromRequest(f *testing.F) {
	for _, s := range []struct{ authz, proto string }{
		{"Bearer a.b.c", ""}, {"", "wsgw.bearer, a.b.c"}, {"bearer ", ""}, {"", "wsgw.bearer,"},
		{"Basic x", "wsgw.bearer, a"}, {"Bearer a b", ""}, {"", ",,wsgw.bearer,,a"}, {"Bearer \x00", ""},
	} {
		f.Add(s.authz, s.proto)
	}
	f.Fuzz(func(t *testing.T, authz, proto string) {
		h := http.Header{}
		if authz != "" {
			h.Set("Authorization", authz)
		}
		if proto != "" {
			h.Set("Sec-WebSocket-Protocol", proto)
		}
		tok, viaSub, err := FromRequest(h)
		if err != nil {
			if tok != "" {
				t.Fatalf("token %q returned with error %v", tok, err)
			}
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			return
		}
		if tok == "" || len(tok) > protocol.MaxTokenLen || checkTokenSyntax(tok) != nil {
			t.Fatalf("returned bad token %q", tok)
		}
		if viaSub == (authz != "") {
			t.Fatalf("viaSubprotocol = %v with Authorization %q", viaSub, authz)
		}
		again, sub2, err := FromRequest(http.Header{"Sec-Websocket-Protocol": {Subprotocol + ", " + tok}})
		if err != nil || again != tok || !sub2 {
			t.Fatalf("subprotocol round trip of %q = %q, %v", tok, again, err)
		}
		again, _, err = FromRequest(http.Header{"Authorization": {"Bearer " + tok}})
		if err != nil || again != tok {
			t.Fatalf("header round trip of %q = %q, %v", tok, again, err)
		}
	})
}
