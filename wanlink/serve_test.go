package wanlink

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/vmigrate/vmigrate/internal/leakcheck"
)

// upstream listens on loopback; each connection it accepts is handled by
// serve, and then closed.
func upstream(t *testing.T, serve func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// startServe runs Serve on a loopback listener in front of addr and
// returns the listener's address; Serve's result arrives on the channel.
func startServe(t *testing.T, ctx context.Context, l *Link, addr string) (string, chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var d net.Dialer
	served := make(chan error, 1)
	go func() {
		served <- Serve(ctx, ln, func(ctx context.Context) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}, l)
	}()
	return ln.Addr().String(), served
}

func waitIdle(t *testing.T, l *Link) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for l.Stats().Conns != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("relays still running: %+v", l.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}

// TestServeRelaysTCPExactly sends 64 MiB of random bytes through Serve on
// real loopback sockets; the far end hashes them and answers with the hash
// once it sees the EOF, which checks the half-close and the return path.
func TestServeRelaysTCPExactly(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Bandwidth: 2_000_000_000, RTT: 2 * time.Millisecond, Jitter: 500 * time.Microsecond},
	} {
		t.Run(cfg.String(), func(t *testing.T) {
			leakcheck.Check(t)
			const total = 64 << 20
			l, err := New(cfg, zaptest.NewLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			addr := upstream(t, func(c net.Conn) {
				h := sha256.New()
				if _, err := io.Copy(h, c); err != nil {
					t.Errorf("upstream read: %v", err)
					return
				}
				c.Write(h.Sum(nil))
			})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			front, served := startServe(t, ctx, l, addr)

			c, err := net.Dial("tcp", front)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			sent := make(chan []byte, 1)
			go func() {
				h := sha256.New()
				src := rand.NewChaCha8([32]byte{1})
				buf := make([]byte, 1<<20)
				for range total / len(buf) {
					src.Read(buf)
					h.Write(buf)
					if _, err := c.Write(buf); err != nil {
						t.Errorf("client write: %v", err)
						break
					}
				}
				c.(*net.TCPConn).CloseWrite()
				sent <- h.Sum(nil)
			}()
			start := time.Now()
			reply, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			want := <-sent
			if !bytes.Equal(reply, want) {
				t.Fatalf("upstream's hash %x, want %x", reply, want)
			}
			t.Logf("64 MiB relayed in %v", time.Since(start))
			waitIdle(t, l)
			st := l.Stats()
			if st.Forward.Bytes != total || st.Forward.Accepted != total || st.Reverse.Bytes != sha256.Size {
				t.Errorf("stats %+v, want %d bytes forward and %d back", st, total, sha256.Size)
			}
			cancel()
			if err := <-served; !errors.Is(err, context.Canceled) {
				t.Errorf("Serve after cancel: %v", err)
			}
			l.Close()
		})
	}
}

func TestServeSurvivesFailedDialAndEndsOnClose(t *testing.T) {
	leakcheck.Check(t)
	l, err := New(Config{Bandwidth: 10_000_000, RTT: 10 * time.Millisecond}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := upstream(t, func(c net.Conn) { io.Copy(c, c) })
	var dials atomic.Int32
	served := make(chan error, 1)
	go func() {
		served <- Serve(context.Background(), ln, func(ctx context.Context) (net.Conn, error) {
			if dials.Add(1) == 1 {
				return nil, errors.New("no route")
			}
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}, l)
	}()

	// The first connection is closed by Serve when its dial fails.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("read on a connection whose dial failed = %d, %v", n, err)
	}
	c.Close()

	// The second one echoes through the link, until Close.
	c, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo = %q, %v", buf, err)
	}
	l.Close()
	if err := <-served; !errors.Is(err, ErrClosed) {
		t.Errorf("Serve after Close: %v, want ErrClosed", err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(buf); err == nil {
		t.Error("connection still open after the link closed")
	}
}
