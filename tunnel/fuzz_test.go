package tunnel

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func addSeeds(f *testing.F, dir string) {
	files, err := filepath.Glob(filepath.Join("testdata", dir, "*.bin"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no seeds in testdata/%s: %v", dir, err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n int
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// FuzzFrameReader: whatever the bytes, the reader does not panic, ends with
// io.EOF, io.ErrUnexpectedEOF or ErrProtocol, and every frame it returns
// re-encodes to exactly the bytes it consumed (round trip). Seeds: the
// golden streams in testdata/frames.
func FuzzFrameReader(f *testing.F) {
	addSeeds(f, "frames")
	f.Fuzz(func(t *testing.T, data []byte) {
		cr := &countReader{r: bytes.NewReader(data)}
		fr := NewFrameReader(cr, 64<<10)
		for {
			before := cr.n
			fm, err := fr.Next()
			if err != nil {
				if err != io.EOF && err != io.ErrUnexpectedEOF && !errors.Is(err, ErrProtocol) {
					t.Fatalf("unexpected error %v", err)
				}
				if err == io.EOF && cr.n != len(data) {
					t.Fatalf("io.EOF with %d of %d bytes read", cr.n, len(data))
				}
				return
			}
			if enc := AppendFrame(nil, fm); !bytes.Equal(enc, data[before:cr.n]) {
				t.Fatalf("frame %v re-encodes to %x, read from %x", fm, enc, data[before:cr.n])
			}
			var buf bytes.Buffer
			if err := NewFrameWriter(&buf, 64<<10).WriteFrame(fm); err != nil || !bytes.Equal(buf.Bytes(), data[before:cr.n]) {
				t.Fatalf("FrameWriter refuses or changes a frame the reader accepted: %v", err)
			}
		}
	})
}

// FuzzHello: ParseHello and ReadHello agree, never panic, fail only with
// ErrNotPeer, ErrProtocol or io.ErrUnexpectedEOF, and a hello they accept
// re-encodes to one that parses the same. Seeds: testdata/hello.
func FuzzHello(f *testing.F) {
	addSeeds(f, "hello")
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, n, err := ParseHello(data)
		h2, err2 := ReadHello(bytes.NewReader(data))
		if (err == nil) != (err2 == nil) || h != h2 {
			t.Fatalf("ParseHello %+v, %v; ReadHello %+v, %v", h, err, h2, err2)
		}
		if err != nil {
			if !errors.Is(err, ErrNotPeer) && !errors.Is(err, ErrProtocol) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if n < helloPrefixLen+HelloBodyLen || n > len(data) {
			t.Fatalf("consumed %d of %d bytes", n, len(data))
		}
		again, _, err := ParseHello(AppendHello(nil, h))
		if err != nil || again != h {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, h)
		}
	})
}

// FuzzSessionFrames feeds arbitrary frames from the peer into a live
// session that has one channel open and a reader on it. The session must not
// panic, must end once the peer closes, and must release its goroutines.
// Seeds: the golden streams, whose channel ids match the open channel.
func FuzzSessionFrames(f *testing.F) {
	addSeeds(f, "frames")
	f.Fuzz(func(t *testing.T, data []byte) {
		c, s := tcpPair(t)
		defer s.Close()
		go s.Write(AppendHello(nil, testHello(RoleServer)))
		cs, err := Client(testCtx(t), c, Config{Insecure: true, Window: MinWindow, MaxPayload: 64 << 10})
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close()
		if _, err := ReadHello(s); err != nil {
			t.Fatal(err)
		}
		ch, err := cs.OpenChannel(testCtx(t), "ram")
		if err != nil {
			t.Fatal(err)
		}
		readDone := make(chan struct{})
		go func() {
			defer close(readDone)
			io.Copy(io.Discard, ch)
		}()
		go io.Copy(io.Discard, s) // the session's own frames
		s.Write(data)
		s.Close()
		select {
		case <-cs.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("session did not end after the peer closed")
		}
		select {
		case <-readDone:
		case <-time.After(5 * time.Second):
			t.Fatal("channel reader not released")
		}
	})
}
