package tunnel

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	return client, r.c
}

var testKey = []byte("0123456789abcdef0123456789abcdef")

func pskConfig(t testing.TB) Config {
	return Config{PSK: testKey, Logger: zaptest.NewLogger(t)}
}

// handshakePair runs Client on c and Server on s at once.
func handshakePair(t testing.TB, c, s net.Conn, ccfg, scfg Config) (cs, ss *Session, cerr, serr error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ss, serr = Server(ctx, s, scfg)
	}()
	cs, cerr = Client(ctx, c, ccfg)
	wg.Wait()
	return cs, ss, cerr, serr
}

// sessionPair returns a client and a server session over loopback TCP, both
// closed when the test ends.
func sessionPair(t testing.TB, ccfg, scfg Config) (*Session, *Session) {
	t.Helper()
	c, s := tcpPair(t)
	cs, ss, cerr, serr := handshakePair(t, c, s, ccfg, scfg)
	if cerr != nil || serr != nil {
		t.Fatalf("handshake: client %v, server %v", cerr, serr)
	}
	t.Cleanup(func() {
		cs.Close()
		ss.Close()
	})
	return cs, ss
}

func randBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func sum(b []byte) [32]byte { return sha256.Sum256(b) }

// readAllSum reads r to its end and returns the length and SHA-256.
func readAllSum(r io.Reader) (int64, [32]byte, error) {
	h := sha256.New()
	n, err := io.CopyBuffer(h, r, make([]byte, 100<<10))
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return n, s, err
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
