package wanlink

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/vmigrate/vmigrate/wanlink/memconn"
)

// connCapacity is the buffer of the in-memory conns on both sides of a
// link in tests: small next to the window, like a socket buffer.
const connCapacity = 64 << 10

// path is one connection through a link on in-memory conns: client's
// writes cross Forward to server, server's cross Reverse to client.
type path struct {
	client, server *memconn.Conn
	relayed        chan error // Relay's result
}

func newPath(t *testing.T, ctx context.Context, l *Link) path {
	t.Helper()
	client, a := memconn.Pipe(connCapacity)
	b, server := memconn.Pipe(connCapacity)
	p := path{client: client, server: server, relayed: make(chan error, 1)}
	go func() { p.relayed <- l.Relay(ctx, a, b) }()
	return p
}

func newLink(t *testing.T, cfg Config) *Link {
	t.Helper()
	l, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// pattern is the content of test streams: byte i of a stream is
// pattern[i%len(pattern)]. Its length is prime so that a chunk delivered
// out of place does not match by accident.
var pattern = func() []byte {
	b := make([]byte, 65521)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}()

// writeStream writes n bytes of the pattern to w in writes of up to size
// bytes.
func writeStream(w io.Writer, n int64, size int) error {
	var off int64
	for off < n {
		k := min(int64(size), n-off)
		start := int(off % int64(len(pattern)))
		k = min(k, int64(len(pattern)-start))
		if _, err := w.Write(pattern[start : start+int(k)]); err != nil {
			return err
		}
		off += k
	}
	return nil
}

// streamReader reads a pattern stream, checking every byte, and notes
// when bytes arrive.
type streamReader struct {
	r            io.Reader
	n            int64
	first, last  time.Time
	onRead       func(n int64) // called after each read with the total, if set
	mismatchedAt int64
}

// readAll reads to EOF and returns an error at the first byte that is not
// the pattern's.
func (s *streamReader) readAll() error {
	buf := make([]byte, 32<<10)
	for {
		k, err := s.r.Read(buf)
		if k > 0 {
			now := time.Now()
			if s.n == 0 {
				s.first = now
			}
			s.last = now
			if err := s.check(buf[:k]); err != nil {
				return err
			}
			if s.onRead != nil {
				s.onRead(s.n)
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (s *streamReader) check(b []byte) error {
	for len(b) > 0 {
		start := int(s.n % int64(len(pattern)))
		k := min(len(b), len(pattern)-start)
		if !bytes.Equal(b[:k], pattern[start:start+k]) {
			return fmt.Errorf("stream differs from the pattern within bytes [%d, %d)", s.n, s.n+int64(k))
		}
		s.n += int64(k)
		b = b[k:]
	}
	return nil
}

// within reports whether got is within frac of want.
func within(got, want, frac float64) bool {
	return got >= want*(1-frac) && got <= want*(1+frac)
}

var _ net.Conn = (*memconn.Conn)(nil)
