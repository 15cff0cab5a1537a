package gateway

import (
	"bytes"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// TestOutboxNeverBlocks: against a peer that does not read, every Write returns at once, until
// the bound is passed; then the outbox fails, closes the socket and reports once.
func TestOutboxNeverBlocks(t *testing.T) {
	server, _ := tcpPair(t)
	o := newOutbox(server, 10*time.Second, 256<<10)
	var failures atomic.Int32
	var failErr atomic.Value
	o.onFail = func(err error) { failures.Add(1); failErr.Store(err) }
	chunk := bytes.Repeat([]byte{'x'}, 16<<10)
	var err error
	for i := 0; i < 4096 && err == nil; i++ { // 64 MiB at most: far past any socket buffer
		start := time.Now()
		_, err = o.Write(chunk)
		if d := time.Since(start); d > time.Second {
			t.Fatalf("write %d took %v", i, d)
		}
	}
	if !errors.Is(err, errOutboxFull) {
		t.Fatalf("err = %v, want errOutboxFull", err)
	}
	if _, err := o.Write([]byte("more")); !errors.Is(err, errOutboxFull) {
		t.Fatalf("write after failure: %v, want the same error", err)
	}
	if failures.Load() != 1 || !errors.Is(failErr.Load().(error), errOutboxFull) {
		t.Fatalf("onFail called %d times (%v), want once with errOutboxFull", failures.Load(), failErr.Load())
	}
}

// TestOutboxKeepsOrder: bytes written while the socket is backed up (kept for the flusher) and
// after it drained (written directly) reach a slow reader complete and in order.
func TestOutboxKeepsOrder(t *testing.T) {
	server, client := tcpPair(t)
	_ = server.(*net.TCPConn).SetWriteBuffer(8 << 10)
	_ = client.(*net.TCPConn).SetReadBuffer(8 << 10)
	o := newOutbox(server, 10*time.Second, 64<<20)
	var want bytes.Buffer
	backedUp := 0
	got := make(chan []byte, 1)
	go func() {
		var b bytes.Buffer
		buf := make([]byte, 1500)
		for {
			n, err := client.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				got <- b.Bytes()
				return
			}
			if b.Len()%7 == 0 {
				time.Sleep(time.Millisecond) // a slow reader: the outbox backs up and drains
			}
		}
	}()
	for i := range 1000 {
		p := bytes.Repeat([]byte{byte('a' + i%26)}, 1+i%2000)
		want.Write(p)
		if _, err := o.Write(p); err != nil {
			t.Fatal(err)
		}
		if o.buffered() > 0 {
			backedUp++
		}
		if i%300 == 0 {
			for o.buffered() > 0 { // drained: the next writes go straight to the socket
				time.Sleep(time.Millisecond)
			}
		}
	}
	for o.buffered() > 0 {
		time.Sleep(time.Millisecond)
	}
	server.Close()
	b := <-got
	if backedUp == 0 {
		t.Fatal("the socket never backed up: the flusher was not exercised")
	}
	t.Logf("%d of 1000 writes left bytes for the flusher", backedUp)
	if !bytes.Equal(b, want.Bytes()) {
		t.Fatalf("received %d bytes, want %d, in order", len(b), want.Len())
	}
}
