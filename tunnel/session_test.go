package tunnel

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/vmigrate/vmigrate/internal/leakcheck"
)

// Many channels at once, both directions, over TLS on loopback TCP: every
// byte arrives, in order, on the right channel.
func TestManyChannelsRoundTrip(t *testing.T) {
	leakcheck.Check(t)
	ccfg, scfg := pskConfig(t), pskConfig(t)
	ccfg.Window, scfg.Window = 256<<10, 128<<10 // different windows on purpose
	scfg.MaxPayload = 16 << 10                  // client must cut its DATA to 16 KiB
	cs, ss := sessionPair(t, ccfg, scfg)
	ctx := testCtx(t)

	const channels = 24
	size := 3 << 20
	if testing.Short() {
		size = 256 << 10
	}
	// Server: for each channel, read everything, then reply with the
	// channel's name and the SHA-256 and length of what it read.
	var swg sync.WaitGroup
	swg.Add(1)
	go func() {
		defer swg.Done()
		for i := 0; i < channels; i++ {
			ch, err := ss.Accept(ctx)
			if err != nil {
				t.Errorf("accept: %v", err)
				return
			}
			swg.Add(1)
			go func() {
				defer swg.Done()
				defer ch.Close()
				n, s, err := readAllSum(ch)
				if err != nil {
					t.Errorf("server read %s: %v", ch.Name(), err)
					return
				}
				fmt.Fprintf(ch, "%s %d %x", ch.Name(), n, s)
				ch.CloseWrite()
			}()
		}
	}()

	var wg sync.WaitGroup
	for i := 0; i < channels; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("disk:vd%c", 'a'+i)
			data := randBytes(t, size+i*4099)
			ch, err := cs.OpenChannel(ctx, name)
			if err != nil {
				t.Errorf("open %s: %v", name, err)
				return
			}
			defer ch.Close()
			// Write in odd-sized pieces.
			for p := data; len(p) > 0; {
				n := min(len(p), 77777)
				if _, err := ch.Write(p[:n]); err != nil {
					t.Errorf("write %s: %v", name, err)
					return
				}
				p = p[n:]
			}
			if err := ch.CloseWrite(); err != nil {
				t.Errorf("close write %s: %v", name, err)
			}
			reply, err := io.ReadAll(ch)
			if err != nil {
				t.Errorf("read reply %s: %v", name, err)
				return
			}
			if want := fmt.Sprintf("%s %d %x", name, len(data), sum(data)); string(reply) != want {
				t.Errorf("reply %q, want %q", reply, want)
			}
			if st := ch.Stats(); st.BytesWritten != int64(len(data)) || st.MaxBuffered > ccfg.Window {
				t.Errorf("%s stats %+v", name, st)
			}
		}()
	}
	wg.Wait()
	swg.Wait()
	st := cs.Stats()
	if st.ChannelsOpened != channels || st.BytesSent < int64(channels*size) || st.WireBytesSent <= st.BytesSent {
		t.Errorf("client stats %+v", st)
	}
	if st := ss.Stats(); st.ChannelsAccepted != channels || st.BytesReceived < int64(channels*size) {
		t.Errorf("server stats %+v", st)
	}
}

// With the reader stalled, the writer blocks once it has sent one window,
// and the receiver never holds more than the window; reading resumes it.
func TestBackpressure(t *testing.T) {
	leakcheck.Check(t)
	const window = 64 << 10
	ccfg, scfg := pskConfig(t), pskConfig(t)
	scfg.Window = window
	cs, ss := sessionPair(t, ccfg, scfg)
	ctx := testCtx(t)

	data := randBytes(t, 8<<20)
	cch, err := cs.OpenChannel(ctx, "ram")
	if err != nil {
		t.Fatal(err)
	}
	sch, err := ss.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var written sync.WaitGroup
	written.Add(1)
	go func() {
		defer written.Done()
		if _, err := cch.Write(data); err != nil {
			t.Errorf("write: %v", err)
		}
		cch.CloseWrite()
	}()

	// Stalled reader: the writer must stop at one window.
	time.Sleep(300 * time.Millisecond)
	if n := cch.Stats().BytesWritten; n > window {
		t.Fatalf("writer sent %d bytes to a stalled reader with a window of %d", n, window)
	}
	if n := sch.Stats().MaxBuffered; n > window {
		t.Fatalf("receiver buffered %d bytes, window %d", n, window)
	}
	// A write deadline ends the blocked wait for credit.
	probe, err := cs.OpenChannel(ctx, "probe")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := probe.Write(make([]byte, window)); err != nil {
		t.Fatal(err) // a window of its own
	}
	probe.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	var ne net.Error
	if _, err := probe.Write([]byte("x")); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("write past the window with a deadline: got %v, want a timeout", err)
	}
	probe.Close()

	// Slow reader: small reads with pauses. The buffer stays within the window
	// throughout, and the bytes are exact.
	var got bytes.Buffer
	buf := make([]byte, 10000)
	for i := 0; ; i++ {
		n, err := sch.Read(buf)
		got.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if i%100 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	written.Wait()
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("got %d bytes, want %d, equal prefix: %v", got.Len(), len(data), bytes.HasPrefix(data, got.Bytes()))
	}
	if n := sch.Stats().MaxBuffered; n > window {
		t.Fatalf("receiver buffered %d bytes, window %d", n, window)
	}
}

// Half-close: each direction ends on its own, in order.
func TestHalfClose(t *testing.T) {
	leakcheck.Check(t)
	cs, ss := sessionPair(t, pskConfig(t), pskConfig(t))
	ctx := testCtx(t)
	a, err := cs.OpenChannel(ctx, "ram")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	if err := a.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Write([]byte("more")); !errors.Is(err, ErrWriteClosed) {
		t.Fatalf("write after CloseWrite: %v", err)
	}
	b, err := ss.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "request" {
		t.Fatalf("server read %q, %v", got, err)
	}
	// The other direction still works after the first ended.
	if _, err := b.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	b.CloseWrite()
	got, err = io.ReadAll(a)
	if err != nil || string(got) != "reply" {
		t.Fatalf("client read %q, %v", got, err)
	}
	a.Close()
	b.Close()
	// Both ends forgot the channel.
	waitFor(t, func() bool { return liveChannels(cs) == 0 && liveChannels(ss) == 0 })
}

func liveChannels(s *Session) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.chans)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Close before the peer finished resets: the peer's writes fail instead of
// waiting for credit forever, and the session goes on.
func TestCloseResetsPeer(t *testing.T) {
	leakcheck.Check(t)
	scfg := pskConfig(t)
	scfg.Window = MinWindow
	cs, ss := sessionPair(t, pskConfig(t), scfg)
	ctx := testCtx(t)
	a, _ := cs.OpenChannel(ctx, "ram")
	b, err := ss.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := a.Write(make([]byte, 1<<20)) // blocks after MinWindow
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	b.Close()
	var re *ResetError
	if err := <-errc; !errors.As(err, &re) || !re.Remote || re.Code != ResetCancel {
		t.Fatalf("blocked write: got %v, want a remote reset", err)
	}
	if _, err := a.Read(make([]byte, 1)); !errors.As(err, &re) {
		t.Fatalf("read after reset: %v", err)
	}
	if _, err := b.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after Close: %v", err)
	}
	// The session is still fine.
	c2, err := cs.OpenChannel(ctx, "ram2")
	if err != nil {
		t.Fatal(err)
	}
	c2.Write([]byte("hi"))
	c2.CloseWrite()
	d2, _ := ss.Accept(ctx)
	if got, err := io.ReadAll(d2); err != nil || string(got) != "hi" {
		t.Fatalf("second channel: %q, %v", got, err)
	}
}

// A RESET after CLOSE aborts only what was unfinished: the peer still reads
// the finished stream to its end.
func TestResetAfterCloseKeepsStream(t *testing.T) {
	leakcheck.Check(t)
	cs, ss := sessionPair(t, pskConfig(t), pskConfig(t))
	ctx := testCtx(t)
	a, _ := cs.OpenChannel(ctx, "ram")
	data := randBytes(t, 300<<10)
	if _, err := a.Write(data); err != nil {
		t.Fatal(err)
	}
	a.CloseWrite()
	a.Reset(ResetInternal, "local write failed")
	b, _ := ss.Accept(ctx)
	time.Sleep(50 * time.Millisecond) // let the RESET arrive before reading
	got, err := io.ReadAll(b)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, %v; want %d", len(got), err, len(data))
	}
	var re *ResetError
	if _, err := b.Write([]byte("x")); !errors.As(err, &re) || re.Code != ResetInternal || re.Reason != "local write failed" {
		t.Fatalf("write after peer reset: %v", err)
	}
	// Without the CLOSE first, a RESET drops the stream.
	c, _ := cs.OpenChannel(ctx, "ram2")
	c.Write([]byte("partial"))
	c.Reset(ResetInternal, "local read failed")
	d, _ := ss.Accept(ctx)
	time.Sleep(50 * time.Millisecond)
	if _, err := io.ReadAll(d); !errors.As(err, &re) {
		t.Fatalf("read of an aborted stream: %v, want a reset", err)
	}
}

// Closing the session fails every channel with one terminal error, on both
// sides.
func TestSessionCloseFailsChannels(t *testing.T) {
	leakcheck.Check(t)
	cs, ss := sessionPair(t, pskConfig(t), pskConfig(t))
	ctx := testCtx(t)
	var chans []*Channel
	for i := 0; i < 3; i++ {
		ch, err := cs.OpenChannel(ctx, fmt.Sprint("c", i))
		if err != nil {
			t.Fatal(err)
		}
		chans = append(chans, ch)
	}
	peer, _ := ss.Accept(ctx)
	readErr := make(chan error, 1)
	go func() {
		_, err := chans[0].Read(make([]byte, 1))
		readErr <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := cs.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-readErr; !errors.Is(err, ErrClosed) {
		t.Fatalf("blocked read: %v", err)
	}
	for _, ch := range chans {
		if _, err := ch.Write([]byte("x")); !errors.Is(err, ErrClosed) {
			t.Fatalf("write: %v", err)
		}
	}
	if _, err := cs.OpenChannel(ctx, "late"); !errors.Is(err, ErrClosed) {
		t.Fatalf("open after close: %v", err)
	}
	<-ss.Done()
	if err := ss.Err(); !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("peer: %v", err)
	}
	if _, err := peer.Read(make([]byte, 1)); !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("peer channel: %v", err)
	}
	if _, err := ss.Accept(ctx); !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("peer accept: %v", err)
	}
}

func TestDeadlines(t *testing.T) {
	leakcheck.Check(t)
	cs, ss := sessionPair(t, pskConfig(t), pskConfig(t))
	ctx := testCtx(t)
	a, _ := cs.OpenChannel(ctx, "ram")
	a.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	start := time.Now()
	var ne net.Error
	if _, err := a.Read(make([]byte, 1)); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read: got %v, want a timeout", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("read deadline late")
	}
	// Clearing the deadline makes Read wait again; data then arrives.
	a.SetReadDeadline(time.Time{})
	b, _ := ss.Accept(ctx)
	go b.Write([]byte("late"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(a, buf); err != nil || string(buf) != "late" {
		t.Fatalf("read after clearing deadline: %q %v", buf, err)
	}
	// A deadline in the past fails at once.
	a.SetDeadline(time.Now().Add(-time.Second))
	if _, err := a.Read(buf); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read with past deadline: %v", err)
	}
}

// Channels the peer opens beyond the accept backlog are refused with a RESET.
func TestAcceptBacklogRefuses(t *testing.T) {
	leakcheck.Check(t)
	scfg := pskConfig(t)
	scfg.AcceptBacklog = 2
	cs, ss := sessionPair(t, pskConfig(t), scfg)
	ctx := testCtx(t)
	var chans []*Channel
	for i := 0; i < 3; i++ {
		ch, err := cs.OpenChannel(ctx, fmt.Sprint("c", i))
		if err != nil {
			t.Fatal(err)
		}
		chans = append(chans, ch)
	}
	var re *ResetError
	if _, err := chans[2].Read(make([]byte, 1)); !errors.As(err, &re) || re.Code != ResetRefused || !re.Remote {
		t.Fatalf("third channel: %v, want refused", err)
	}
	if st := ss.Stats(); st.ChannelsRefused != 1 || st.ChannelsAccepted != 2 {
		t.Fatalf("stats %+v", st)
	}
	// The refused channel's late frames are ignored, not a protocol error.
	chans[2].Close()
	if _, err := ss.Accept(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ss.Err(); err != nil {
		t.Fatal(err)
	}
}

func TestKeepAlive(t *testing.T) {
	leakcheck.Check(t)
	ccfg, scfg := pskConfig(t), pskConfig(t)
	ccfg.KeepAlive, scfg.KeepAlive = 20*time.Millisecond, 20*time.Millisecond
	cs, ss := sessionPair(t, ccfg, scfg)
	waitFor(t, func() bool { return cs.Stats().RTT > 0 && ss.Stats().RTT > 0 })
	time.Sleep(200 * time.Millisecond) // idle, but alive: pings keep it up
	if cs.Err() != nil || ss.Err() != nil {
		t.Fatalf("idle session failed: %v / %v", cs.Err(), ss.Err())
	}
}

// A peer that goes silent is detected by the keepalive.
func TestKeepAliveTimeout(t *testing.T) {
	leakcheck.Check(t)
	c, s := tcpPair(t)
	defer s.Close()
	go func() { // a peer that greets, then only reads
		s.Write(AppendHello(nil, testHello(RoleServer)))
		io.Copy(io.Discard, s)
	}()
	cfg := Config{Insecure: true, KeepAlive: 20 * time.Millisecond, KeepAliveTimeout: 150 * time.Millisecond}
	cs, err := Client(testCtx(t), c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	select {
	case <-cs.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("silent peer not detected")
	}
	if err := cs.Err(); !errors.Is(err, ErrKeepAlive) {
		t.Fatalf("got %v, want ErrKeepAlive", err)
	}
}

func TestOpenChannelName(t *testing.T) {
	leakcheck.Check(t)
	cs, ss := sessionPair(t, pskConfig(t), pskConfig(t))
	ctx := testCtx(t)
	for _, name := range []string{"", string(make([]byte, MaxNameLen+1)), "\xff"} {
		if _, err := cs.OpenChannel(ctx, name); err == nil {
			t.Errorf("OpenChannel(%q) succeeded", name)
		}
	}
	long := string(bytes.Repeat([]byte("n"), MaxNameLen))
	if _, err := ss.OpenChannel(ctx, long); err != nil { // the server may open too
		t.Fatal(err)
	}
	ch, err := cs.Accept(ctx)
	if err != nil || ch.Name() != long || ch.ID() != 2 {
		t.Fatalf("accepted %v, %v", ch, err)
	}
}
