package lbconfig

import (
	"strings"
	"testing"
)

func TestRenderRejects(t *testing.T) {
	for name, c := range map[string]Config{
		"neither mode":        {},
		"both modes":          {Docker: true, Servers: []string{"127.0.0.1:1"}},
		"server without port": {Servers: []string{"127.0.0.1"}},
		"server without host": {Servers: []string{":8081"}},
		"server port zero":    {Servers: []string{"h:0"}},
		"server injection":    {Servers: []string{"h:1 backup\n    server evil 1.2.3.4:80"}},
		"bind not host:port":  {Docker: true, Bind: "8080"},
		"bind with comment":   {Docker: true, Bind: ":8080#x"},
		"stats same as bind":  {Docker: true, StatsBind: ":8080"},
		"negative maxconn":    {Docker: true, MaxConn: -1},
		"negative threads":    {Docker: true, Threads: -1},
		"negative per-source": {Docker: true, PerSourceConns: -1},
		"negative rate":       {Docker: true, PerSourceRate: -5},
	} {
		var b strings.Builder
		if err := Render(&b, c); err == nil {
			t.Errorf("%s: Render(%+v) succeeded, want an error", name, c)
		} else if b.Len() != 0 {
			t.Errorf("%s: wrote %d bytes before failing", name, b.Len())
		}
	}
}

// render renders c, failing the test on an error.
func render(t *testing.T, c Config) string {
	t.Helper()
	var b strings.Builder
	if err := Render(&b, c); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// containsAll reports each of wants (whole lines, with their newlines) missing from out.
func containsAll(t *testing.T, out string, wants []string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(out, want) {
			t.Errorf("rendered config lacks %q:\n%s", strings.TrimSpace(want), out)
		}
	}
}

func TestRenderServers(t *testing.T) {
	out := render(t, Config{Servers: []string{"127.0.0.1:9001", "localhost:9002"}, Bind: "127.0.0.1:8080", MaxConn: 500})
	containsAll(t, out, []string{
		"\n    bind 127.0.0.1:8080\n",
		"\n    server gw1 127.0.0.1:9001 check\n",
		"\n    server gw2 localhost:9002 check\n",
		"\n    maxconn 500\n",
		"\n    balance leastconn\n",
		"\n    option httpchk GET /readyz\n",
		"\n    timeout tunnel 1h\n",
		"\n    tcp-request connection track-sc0 src\n",
		"\n    tcp-request connection reject if { sc_conn_cur(0) gt 1000 }\n",
		"\n    tcp-request connection reject if { sc_conn_rate(0) gt 500 }\n",
	})
	for _, unwanted := range []string{"resolvers", "server-template", "frontend stats", "nbthread"} {
		if strings.Contains(out, unwanted) {
			t.Errorf("static config contains %q", unwanted)
		}
	}
}

func TestRenderDockerDefaults(t *testing.T) {
	out := render(t, Config{Docker: true, StatsBind: ":8404"})
	containsAll(t, out, []string{
		"\n    bind :8080\n",
		"\n    maxconn 100000\n",
		"\n    nameserver dns 127.0.0.11:53\n",
		"\n    server-template gw 1-10 gateway:8080 check resolvers docker init-addr none\n",
		"\n    bind :8404\n",
	})
	if strings.Contains(out, "{{") || strings.Contains(out, "<no value>") {
		t.Errorf("template left unexpanded:\n%s", out)
	}
}

func TestMaxConnFor(t *testing.T) {
	for nofile, want := range map[uint64]int{0: 1, 1000: 1, 20000: 9500, 1 << 20: DefaultMaxConn} {
		if got := MaxConnFor(nofile); got != want {
			t.Errorf("MaxConnFor(%d) = %d, want %d", nofile, got, want)
		}
	}
}

func TestRenderThreads(t *testing.T) {
	global, _, _ := strings.Cut(render(t, Config{Servers: []string{"127.0.0.1:9001"}, Threads: 1}), "\ndefaults")
	if !strings.Contains(global, "\n    nbthread 1\n") {
		t.Errorf("global section lacks nbthread 1:\n%s", global)
	}
}
