// Command floor is the reference the gateway's load figures are measured against: the
// simplest coder/websocket server that speaks enough of docs/PROTOCOL.md for deploy/loadtest
// (a welcome, then every tick). One reader and one writer goroutine per socket, the sockets in
// a map under a mutex, each tick's bytes handed unchanged to every socket's buffered channel
// (a full channel drops the socket). No presence, no Fibonacci, no metrics.
//
// With -redis it subscribes to the ticker's channel (`ws:time`), as a gateway in cluster mode
// does, so both are fed by the same ticker and compared on the same ticks; without, it runs
// its own ticker every -interval.
//
//	go run ./deploy/bench/floor -addr 127.0.0.1:8090 -redis redis://127.0.0.1:6379/0
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/wsgw/wsgw/internal/cli"
	"github.com/wsgw/wsgw/pkg/protocol"
	"github.com/wsgw/wsgw/pkg/rediskey"
)

func main() {
	cli.Main("floor", func(ctx context.Context) error { return run(ctx, os.Args[1:]) })
}

// server is the set of sockets.
type server struct {
	mu    sync.Mutex
	conns map[*client]struct{}
}

type client struct {
	out chan []byte
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8090", "listen address")
	redisURL := fs.String("redis", "", "subscribe to the ticks on this Redis (cluster mode's source); empty: own ticker")
	prefix := fs.String("prefix", "ws:", "Redis key prefix")
	interval := fs.Duration("interval", time.Second, "own ticker's interval (without -redis)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s := &server{conns: map[*client]struct{}{}}

	if *redisURL != "" {
		opt, err := redis.ParseURL(*redisURL)
		if err != nil {
			return fmt.Errorf("parse -redis: %w", err)
		}
		rdb := redis.NewClient(opt)
		defer rdb.Close()
		ps := rdb.Subscribe(ctx, rediskey.New(*prefix).Time())
		if _, err := ps.Receive(ctx); err != nil {
			return fmt.Errorf("subscribe: %w", err)
		}
		defer ps.Close()
		go func() {
			for m := range ps.Channel() {
				s.broadcast([]byte(m.Payload))
			}
		}()
	} else {
		go func() {
			t := time.NewTicker(*interval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case now := <-t.C:
					seq := now.Truncate(*interval).UnixMilli() / interval.Milliseconds()
					s.broadcast(protocol.TimeFrame(seq, *interval)) // marshalled once per tick
				}
			}
		}()
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", s.handleWS)
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { <-ctx.Done(); _ = hs.Close() }()
	log.Printf("floor listening on %s", ln.Addr())
	if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (s *server) broadcast(frame []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		select {
		case c.out <- frame:
		default: // slow consumer: its writer closes it
			close(c.out)
			delete(s.conns, c)
		}
	}
}

func (s *server) handleWS(w http.ResponseWriter, r *http.Request) {
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	var b [10]byte
	_, _ = rand.Read(b[:])
	id := "c-" + hex.EncodeToString(b[:])
	user := r.URL.Query().Get("user")
	ctx := context.Background()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = ws.Write(wctx, websocket.MessageText, protocol.EncodeWelcome(id, user, "floor", protocol.DefaultMaxN, 0))
	cancel()
	if err != nil {
		_ = ws.CloseNow()
		return
	}
	c := &client{out: make(chan []byte, 16)}
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()

	go func() { // the writer
		for frame := range c.out {
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := ws.Write(wctx, websocket.MessageText, frame)
			cancel()
			if err != nil {
				break
			}
		}
		_ = ws.CloseNow()
	}()
	go func() { // the reader
		for {
			if _, _, err := ws.Read(ctx); err != nil {
				break
			}
		}
		s.mu.Lock()
		if _, ok := s.conns[c]; ok {
			delete(s.conns, c)
			close(c.out)
		}
		s.mu.Unlock()
		_ = ws.CloseNow()
	}()
}
