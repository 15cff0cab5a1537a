package protocol

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestParseRequest(t *testing.T) {
	long := strings.Repeat("x", 65)
	cases := []struct {
		in     string
		binary bool
		n      int
		id     string
		code   string // empty: success
	}{
		{in: `{"type":"fib","n":10,"id":"r1"}`, n: 10, id: "r1"},
		{in: `{"type":"fib","n":0}`, n: 0},
		{in: `{"n":7,"type":"fib"}`, n: 7},
		{in: `{"type":"fib","n":1e2}`, n: 100},
		{in: `{"type":"fib","n":10.0}`, n: 10},
		{in: `{"type":"fib","n":100000}`, n: 100000},
		{in: `10`, n: 10},
		{in: ` 10 `, n: 10},
		{in: `fib 10`, n: 10},
		{in: "fib\t42", n: 42},
		{in: `{"type":"fib","n":10.5,"id":"a"}`, id: "a", code: CodeInvalidN},
		{in: `{"type":"fib","n":-1,"id":"a"}`, id: "a", code: CodeInvalidN},
		{in: `{"type":"fib","n":"10","id":"a"}`, id: "a", code: CodeInvalidN},
		{in: `{"type":"fib","n":1e400,"id":"a"}`, id: "a", code: CodeInvalidN},
		{in: `{"type":"fib","n":100001}`, code: CodeInvalidN},
		{in: `{"type":"fib","id":"m"}`, id: "m", code: CodeInvalidN},
		{in: `{"type":"fib","n":null}`, code: CodeInvalidN},
		{in: `{"type":"fib","n":true}`, code: CodeInvalidN},
		{in: `10.5`, code: CodeInvalidN},
		{in: `-1`, code: CodeInvalidN},
		{in: `"10"`, code: CodeInvalidN},
		{in: `1e400`, code: CodeInvalidN},
		{in: `fib x`, code: CodeInvalidN},
		{in: `fib`, code: CodeInvalidN},
		{in: `fib 1 2`, code: CodeInvalidN},
		{in: `0x10`, code: CodeInvalidN},
		{in: ``, code: CodeBadRequest},
		{in: `   `, code: CodeBadRequest},
		{in: `10`, binary: true, code: CodeBadRequest},
		{in: `hello`, code: CodeBadRequest},
		{in: `fibonacci 10`, code: CodeBadRequest},
		{in: `{bad json`, code: CodeBadRequest},
		{in: `[1,2]`, code: CodeBadRequest},
		{in: `{"type":"subscribe","id":"s"}`, id: "s", code: CodeBadRequest},
		{in: `{"n":10}`, code: CodeBadRequest},
		{in: `{"type":"fib","n":10,"id":5}`, code: CodeBadRequest},
		{in: `{"type":"fib","n":10,"id":"` + long + `"}`, code: CodeBadRequest},
	}
	for _, c := range cases {
		req, perr := ParseRequest([]byte(c.in), c.binary, DefaultMaxN)
		if c.code == "" {
			if perr != nil || req.N != c.n || req.ID != c.id {
				t.Errorf("ParseRequest(%q) = %+v, %v; want n=%d id=%q", c.in, req, perr, c.n, c.id)
			}
			continue
		}
		if perr == nil || perr.Code != c.code || perr.ID != c.id {
			t.Errorf("ParseRequest(%q) error = %+v; want code %s id %q", c.in, perr, c.code, c.id)
		}
	}
}

func TestParseRefresh(t *testing.T) {
	req, perr := ParseRequest([]byte(`{"type":"refresh","token":"a.b.c"}`), false, DefaultMaxN)
	if perr != nil || req.Type != TypeRefresh || req.Token != "a.b.c" {
		t.Fatalf("refresh = %+v, %v", req, perr)
	}
	req, perr = ParseRequest(EncodeRefresh("x.y.z"), false, DefaultMaxN)
	if perr != nil || req.Token != "x.y.z" {
		t.Fatalf("EncodeRefresh round trip = %+v, %v", req, perr)
	}
	for _, in := range []string{
		`{"type":"refresh","id":"r"}`, `{"type":"refresh","token":"","id":"r"}`, `{"type":"refresh","token":5,"id":"r"}`,
		`{"type":"refresh","token":null,"id":"r"}`, `{"type":"refresh","token":"` + strings.Repeat("t", MaxTokenLen+1) + `","id":"r"}`,
	} {
		_, perr := ParseRequest([]byte(in), false, DefaultMaxN)
		if perr == nil || perr.Code != CodeBadToken || perr.ID != "r" {
			t.Errorf("ParseRequest(%.60q) = %+v; want bad_token with id r", in, perr)
		}
	}
	if req, perr := ParseRequest([]byte(`10`), false, DefaultMaxN); perr != nil || req.Type != TypeFib {
		t.Fatalf("plain fib = %+v, %v", req, perr)
	}
}

func TestWelcomeExp(t *testing.T) {
	if b := EncodeWelcome("c-1", "ana", "gw", 10, 0); strings.Contains(string(b), "exp") {
		t.Fatalf("exp not omitted with authentication off: %s", b)
	}
	f, err := Decode(EncodeWelcome("c-1", "ana", "gw", 10, 1795336200))
	if err != nil || f.Exp != 1795336200 || f.User != "ana" {
		t.Fatalf("welcome = %+v, %v", f, err)
	}
	f, err = Decode(EncodeRefreshed(1795336300))
	if err != nil || f.Type != TypeRefreshed || f.Exp != 1795336300 {
		t.Fatalf("refreshed = %+v, %v", f, err)
	}
}

func TestEncodeFibIsJSON(t *testing.T) {
	b := EncodeFib(`we"ird\id`, 10, "55")
	f, err := Decode(b)
	if err != nil || f.Type != TypeFib || f.ID != `we"ird\id` || f.N != 10 || f.Result != "55" {
		t.Fatalf("Decode(%s) = %+v, %v", b, f, err)
	}
	if !strings.HasPrefix(string(EncodeFib("", 0, "0")), `{"type":"fib","n":0,`) {
		t.Fatalf("id not omitted: %s", EncodeFib("", 0, "0"))
	}
}

func TestTimeFrame(t *testing.T) {
	b := TimeFrame(1795332601, time.Second)
	want := `{"type":"time","seq":1795332601,"time":"2026-11-22T07:30:01.000Z"}`
	if string(b) != want {
		t.Fatalf("TimeFrame = %s, want %s", b, want)
	}
	seq, err := TickSeqOf(b)
	if err != nil || seq != 1795332601 {
		t.Fatalf("TickSeqOf = %d, %v", seq, err)
	}
	// The slow path accepts reordered keys.
	seq, err = TickSeqOf([]byte(`{"seq":7,"type":"time","time":"x"}`))
	if err != nil || seq != 7 {
		t.Fatalf("TickSeqOf reordered = %d, %v", seq, err)
	}
	if _, err := TickSeqOf([]byte(`{"type":"fib","n":1}`)); err == nil {
		t.Fatal("TickSeqOf accepted a fib frame")
	}
	// 250 ms interval: seq counts quarter seconds and the time keeps its milliseconds.
	b = TimeFrame(4, 250*time.Millisecond)
	if !strings.Contains(string(b), `"time":"1970-01-01T00:00:01.000Z"`) {
		t.Fatalf("TimeFrame(250ms) = %s", b)
	}
	if got := TickSeq(time.UnixMilli(1999), 250*time.Millisecond); got != 7 {
		t.Fatalf("TickSeq = %d, want 7", got)
	}
}

func TestValidateUser(t *testing.T) {
	for _, ok := range []string{"alice", "Ana_1.x-y", "Zoë", "日本", strings.Repeat("é", 64)} {
		if err := ValidateUser(ok); err != nil {
			t.Errorf("ValidateUser(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a b", "a/b", "<script>", strings.Repeat("a", 65), "\xff"} {
		if err := ValidateUser(bad); err == nil {
			t.Errorf("ValidateUser(%q) = nil", bad)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("ValidateUser(%q) error is not one line", bad)
		}
	}
}

func TestRetryReason(t *testing.T) {
	r := RetryReason(1234 * time.Millisecond)
	if r != `{"retry_ms":1234}` {
		t.Fatalf("RetryReason = %s", r)
	}
	if d, ok := ParseRetry(r); !ok || d != 1234*time.Millisecond {
		t.Fatalf("ParseRetry = %v %v", d, ok)
	}
	if _, ok := ParseRetry("bye"); ok {
		t.Fatal("ParseRetry accepted junk")
	}
}

// FuzzParseRequest checks that no input panics, every error is a contract code whose frame is
// valid JSON, and every success is in range.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{`10`, `fib 10`, `{"type":"fib","n":10,"id":"r1"}`, `{"type":"fib","n":1e400}`,
		`10.5`, `-1`, `"10"`, ``, `{`, `[]`, `{"type":"x"}`, `fib x`, `{"type":"fib","n":10,"id":"` + strings.Repeat("y", 70) + `"}`} {
		f.Add([]byte(s), false)
	}
	f.Add([]byte(`{"type":"refresh","token":"a.b.c"}`), false)
	f.Add([]byte(`{"type":"refresh","token":5,"id":"r"}`), false)
	f.Add([]byte{0xff, 0x00}, true)
	f.Fuzz(func(t *testing.T, data []byte, binary bool) {
		req, perr := ParseRequest(data, binary, 1000)
		if perr != nil {
			switch perr.Code {
			case CodeBadRequest, CodeInvalidN, CodeBadToken:
			default:
				t.Fatalf("unexpected code %q", perr.Code)
			}
			if len(perr.ID) > MaxIDLen {
				t.Fatalf("echoed id longer than %d", MaxIDLen)
			}
			frame := EncodeError(perr.ID, perr.Code, perr.Message)
			if !json.Valid(frame) || !utf8.Valid(frame) {
				t.Fatalf("error frame is not valid JSON: %q", frame)
			}
			return
		}
		if req.Type == TypeRefresh {
			if binary || req.Token == "" || len(req.Token) > MaxTokenLen || len(req.ID) > MaxIDLen {
				t.Fatalf("accepted refresh %q (binary=%v) as %+v", data, binary, req)
			}
			return
		}
		if binary || req.Type != TypeFib || req.N < 0 || req.N > 1000 || len(req.ID) > MaxIDLen {
			t.Fatalf("accepted %q (binary=%v) as %+v", data, binary, req)
		}
		if !json.Valid(EncodeFib(req.ID, req.N, "1")) {
			t.Fatalf("fib frame not valid JSON for id %q", req.ID)
		}
	})
}

func TestIsJSONNumber(t *testing.T) {
	for _, ok := range []string{"0", "-0", "10", "10.5", "1e400", "1E+2", "-1.5e-3"} {
		if !isJSONNumber(ok) {
			t.Errorf("isJSONNumber(%q) = false", ok)
		}
	}
	for _, bad := range []string{"", "-", "01", "+1", "1.", ".5", "1e", "0x10", "1 2", "NaN", "1e+", "--1"} {
		if isJSONNumber(bad) {
			t.Errorf("isJSONNumber(%q) = true", bad)
		}
	}
}
