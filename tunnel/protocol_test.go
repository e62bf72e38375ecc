package tunnel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmigrate/vmigrate/internal/leakcheck"
)

// rawPeer is the server end of an insecure session driven byte by byte by
// the test.
type rawPeer struct {
	t    *testing.T
	conn net.Conn
	fr   *FrameReader
}

// newRawPeer returns a client session (insecure, window 64 KiB) and the raw
// server peer it talks to, past the hellos.
func newRawPeer(t *testing.T) (*Session, *rawPeer) {
	t.Helper()
	c, s := tcpPair(t)
	hello := testHello(RoleServer)
	hello.Window = 64 << 10
	go s.Write(AppendHello(nil, hello))
	cs, err := Client(testCtx(t), c, Config{Insecure: true, Window: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ReadHello(s); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close() // first, or cs.Close lingers for the peer to close
		cs.Close()
	})
	return cs, &rawPeer{t: t, conn: s, fr: NewFrameReader(s, MaxMaxPayload)}
}

func (p *rawPeer) send(frames ...Frame) {
	var b []byte
	for _, f := range frames {
		b = AppendFrame(b, f)
	}
	if _, err := p.conn.Write(b); err != nil {
		p.t.Errorf("raw peer: write: %v", err)
	}
}

// goAway reads frames until a GOAWAY and returns it.
func (p *rawPeer) goAway() (GoAwayCode, string) {
	p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := p.fr.Next()
		if err != nil {
			p.t.Fatalf("raw peer: no GOAWAY: %v", err)
		}
		if f.Type == FrameGoAway {
			code, reason := parseCode(f.Payload)
			return GoAwayCode(code), reason
		}
	}
}

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// Every protocol violation ends the session here with ErrProtocol and is
// reported to the peer in a GOAWAY with code 1 and the same text.
func TestProtocolErrorsBothEnds(t *testing.T) {
	leakcheck.Check(t)
	open := Frame{Type: FrameOpen, Channel: 2, Payload: []byte("ram")}
	tests := []struct {
		name   string
		frames []Frame
		raw    []byte
		want   string
	}{
		{name: "unknown type", raw: rawHeader(0x7f, 0, 0, 0, 0), want: "unknown frame type"},
		{name: "data too long", raw: rawHeader(byte(FrameData), 0, 0, 2, DefaultMaxPayload+1), want: "DATA frame of"},
		{name: "data for unknown channel", frames: []Frame{{Type: FrameData, Channel: 8, Payload: []byte("x")}}, want: "never opened"},
		{name: "window for unknown channel", frames: []Frame{{Type: FrameWindow, Channel: 3, Payload: u32(1)}}, want: "never opened"},
		{name: "open with client parity", frames: []Frame{{Type: FrameOpen, Channel: 3, Payload: []byte("x")}}, want: "an id of this side"},
		{name: "open not increasing", frames: []Frame{open, open}, want: "ids must increase"},
		{name: "open name not utf-8", frames: []Frame{{Type: FrameOpen, Channel: 2, Payload: []byte{0xff}}}, want: "not UTF-8"},
		{name: "window overflow by data", frames: []Frame{open,
			{Type: FrameData, Channel: 2, Payload: make([]byte, 40<<10)},
			{Type: FrameData, Channel: 2, Payload: make([]byte, 30<<10)}}, want: "window overflow"},
		{name: "window overflow by credit", frames: []Frame{open, {Type: FrameWindow, Channel: 2, Payload: u32(1)}}, want: "window overflow"},
		{name: "zero window", frames: []Frame{open, {Type: FrameWindow, Channel: 2, Payload: u32(0)}}, want: "WINDOW of 0"},
		{name: "data after close", frames: []Frame{open, {Type: FrameClose, Channel: 2}, {Type: FrameData, Channel: 2, Payload: []byte("x")}}, want: "after its CLOSE"},
		{name: "second close", frames: []Frame{open, {Type: FrameClose, Channel: 2}, {Type: FrameClose, Channel: 2}}, want: "second CLOSE"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs, peer := newRawPeer(t)
			peer.send(tc.frames...)
			peer.conn.Write(tc.raw)
			code, reason := peer.goAway()
			peer.conn.Close()
			<-cs.Done()
			err := cs.Err()
			if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("session error %v, want ErrProtocol with %q", err, tc.want)
			}
			if code != GoAwayProtocolError || !strings.Contains(reason, tc.want) {
				t.Fatalf("peer got GOAWAY %v %q", code, reason)
			}
		})
	}
}

// A GOAWAY from the peer ends the session with a *RemoteError, and channels
// report it.
func TestRemoteGoAway(t *testing.T) {
	leakcheck.Check(t)
	cs, peer := newRawPeer(t)
	ch, err := cs.OpenChannel(testCtx(t), "ram")
	if err != nil {
		t.Fatal(err)
	}
	peer.send(Frame{Type: FrameGoAway, Payload: codePayload(uint32(GoAwayProtocolError), "window overflow on channel 1")})
	_, err = ch.Read(make([]byte, 1))
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != GoAwayProtocolError || !errors.Is(err, ErrProtocol) || errors.Is(err, ErrPeerClosed) {
		t.Fatalf("got %v", err)
	}
}

// Frames for a channel that ended here but not yet at the peer are ignored.
func TestLateFramesIgnored(t *testing.T) {
	leakcheck.Check(t)
	cs, peer := newRawPeer(t)
	ctx := testCtx(t)
	ch, _ := cs.OpenChannel(ctx, "ram")
	ch.Close() // RESET goes out; the peer has not seen it yet
	peer.send(
		Frame{Type: FrameData, Channel: ch.ID(), Payload: []byte("in flight")},
		Frame{Type: FrameWindow, Channel: ch.ID(), Payload: u32(100)},
		Frame{Type: FrameClose, Channel: ch.ID()},
		Frame{Type: FrameReset, Channel: ch.ID(), Payload: codePayload(0, "")},
		Frame{Type: FramePing, Payload: []byte("12345678")},
	)
	peer.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var types []FrameType
	for {
		f, err := peer.fr.Next()
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, f.Type)
		if f.Type == FramePong {
			if string(f.Payload) != "12345678" {
				t.Fatalf("PONG %q", f.Payload)
			}
			break
		}
	}
	if want := []FrameType{FrameOpen, FrameReset, FramePong}; !equalTypes(types, want) {
		t.Fatalf("peer got %v, want %v", types, want)
	}
	if err := cs.Err(); err != nil {
		t.Fatal(err)
	}
}

func equalTypes(a, b []FrameType) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A stream cut between frames without GOAWAY, or inside one, is a lost
// connection reported as io.ErrUnexpectedEOF.
func TestTruncatedStream(t *testing.T) {
	leakcheck.Check(t)
	for _, tail := range [][]byte{nil, rawHeader(byte(FrameData), 0, 0, 2, 100)[:7], append(rawHeader(byte(FrameData), 0, 0, 2, 100), "abc"...)} {
		cs, peer := newRawPeer(t)
		ch, _ := cs.OpenChannel(testCtx(t), "ram")
		if f, err := peer.fr.Next(); err != nil || f.Type != FrameOpen {
			t.Fatalf("peer read %v, %v", f, err) // read all, so closing sends FIN, not RST
		}
		peer.send(Frame{Type: FrameOpen, Channel: 2, Payload: []byte("x")})
		peer.conn.Write(tail)
		peer.conn.Close()
		<-cs.Done()
		if err := cs.Err(); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("tail %q: got %v, want io.ErrUnexpectedEOF", tail, err)
		}
		if _, err := ch.Read(make([]byte, 1)); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("channel: got %v", err)
		}
	}
}

// tamperProxy relays between a client and a server on loopback and applies
// edit to the client→server byte stream: edit gets the offset of a chunk and
// the chunk, and returns what to forward and whether to cut the stream
// after it.
func tamperProxy(t *testing.T, client, server net.Conn, edit func(off int64, b []byte) ([]byte, bool)) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		buf := make([]byte, 16<<10)
		var off int64
		for {
			n, err := client.Read(buf)
			if n > 0 {
				out, cut := edit(off, buf[:n])
				off += int64(n)
				if _, werr := server.Write(out); werr != nil || cut {
					server.Close()
					client.Close()
					return
				}
			}
			if err != nil {
				server.(*net.TCPConn).CloseWrite()
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		io.Copy(client, server)
		client.Close()
	}()
	t.Cleanup(func() {
		client.Close()
		server.Close()
		wg.Wait()
	})
}

// A byte flipped inside the TLS stream, deep into a transfer, aborts the
// session on both ends with an error; no corrupted byte is delivered.
func TestTamperedTLSStream(t *testing.T) {
	leakcheck.Check(t)
	const flipAt = 1 << 20
	c, p1 := tcpPair(t)
	p2, s := tcpPair(t)
	tamperProxy(t, p1, p2, func(off int64, b []byte) ([]byte, bool) {
		if off <= flipAt && flipAt < off+int64(len(b)) {
			b[flipAt-off] ^= 0x01
		}
		return b, false
	})
	cs, ss, cerr, serr := handshakePair(t, c, s, pskConfig(t), pskConfig(t))
	if cerr != nil || serr != nil {
		t.Fatal(cerr, serr)
	}
	defer cs.Close()
	defer ss.Close()
	ctx := testCtx(t)
	data := randBytes(t, 4<<20)
	ch, _ := cs.OpenChannel(ctx, "ram")
	go func() {
		ch.Write(data)
		ch.CloseWrite()
	}()
	peer, err := ss.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(peer)
	if err == nil {
		t.Fatal("read a tampered stream to its end without error")
	}
	if !bytes.HasPrefix(data, got) {
		t.Fatal("a corrupted byte was delivered")
	}
	t.Logf("receiver: %v after %d bytes", err, len(got))
	<-cs.Done()
	<-ss.Done()
	t.Logf("sender session: %v", cs.Err())
	if cs.Err() == nil || ss.Err() == nil {
		t.Fatal("a session survived")
	}
}

// A TLS stream cut in the middle is reported as io.ErrUnexpectedEOF.
func TestTruncatedTLSStream(t *testing.T) {
	leakcheck.Check(t)
	const cutAt = 200 << 10
	c, p1 := tcpPair(t)
	p2, s := tcpPair(t)
	tamperProxy(t, p1, p2, func(off int64, b []byte) ([]byte, bool) {
		if off+int64(len(b)) > cutAt {
			return b[:cutAt-off], true
		}
		return b, false
	})
	cs, ss, cerr, serr := handshakePair(t, c, s, pskConfig(t), pskConfig(t))
	if cerr != nil || serr != nil {
		t.Fatal(cerr, serr)
	}
	defer cs.Close()
	defer ss.Close()
	ctx := testCtx(t)
	ch, _ := cs.OpenChannel(ctx, "ram")
	go ch.Write(randBytes(t, 1<<20))
	peer, _ := ss.Accept(ctx)
	_, err := io.ReadAll(peer)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v, want io.ErrUnexpectedEOF", err)
	}
}
