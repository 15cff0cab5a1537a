package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wsgw/wsgw/internal/testkit"
)

func TestMain(m *testing.M) { testkit.MainWithLeakCheck(m) }

// TestAdminAddr: with ADMIN_ADDR the ticker serves /healthz and /metrics, and the metrics show
// the lease it holds and the ticks it publishes.
func TestAdminAddr(t *testing.T) {
	testkit.Need(t, "redis-server")
	r := testkit.StartRedis(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	admin := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	env := []string{"REDIS_URL=" + r.URL(), "REDIS_PREFIX=" + testkit.Prefix(t), "TICK_INTERVAL=100ms", "ADMIN_ADDR=" + admin, "TICKER_ID=tk-admin"}
	go func() { done <- run(ctx, nil, env, io.Discard, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run = %v", err)
		}
	})
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + admin + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := get("/metrics")
		if code == 200 && strings.Contains(body, "ticker_lease_held 1") && !strings.Contains(body, "ticks_published_total 0") &&
			strings.Contains(body, "ticker_lease_changes_total") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics never showed the lease held and ticks published: %d\n%s", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, body := get("/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/healthz = %d %q", code, body)
	}
}

func TestAdminAddrBad(t *testing.T) {
	err := run(context.Background(), nil, []string{"REDIS_URL=redis://127.0.0.1:1/0", "ADMIN_ADDR=nope"}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "ADMIN_ADDR") {
		t.Fatalf("err = %v", err)
	}
}
