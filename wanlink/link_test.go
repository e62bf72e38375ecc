package wanlink

import (
	"context"
	"errors"
	"io"
	"runtime"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// These tests run on the virtual clock of testing/synctest: the link's
// timers fire exactly when due, so they check the model itself. The
// emulator's behaviour on real time is in serve_test.go and the
// benchmarks.

func TestRateIsHonoured(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			bw    = 100_000_000
			rtt   = 50 * time.Millisecond
			total = 50_000_000
		)
		l := newLink(t, Config{Bandwidth: bw, RTT: rtt})
		defer l.Close()
		p := newPath(t, context.Background(), l)
		start := time.Now()
		go func() {
			writeStream(p.client, total, 64<<10)
			p.client.CloseWrite()
		}()
		s := &streamReader{r: p.server}
		if err := s.readAll(); err != nil {
			t.Fatal(err)
		}
		if s.n != total {
			t.Fatalf("received %d bytes, want %d", s.n, total)
		}
		// The last byte leaves the wire total/rate after the start and
		// arrives RTT/2 later.
		transfer := s.last.Sub(start) - rtt/2
		rate := float64(total*8) / transfer.Seconds()
		t.Logf("%d bytes in %v: %.3f Mbit/s", total, s.last.Sub(start), rate/1e6)
		if !within(rate, bw, 0.02) {
			t.Errorf("rate %.3f Mbit/s, want %.0f within 2%%", rate/1e6, bw/1e6)
		}
		p.server.Close()
		if err := <-p.relayed; err != nil {
			t.Errorf("Relay: %v", err)
		}
		st := l.Stats().Forward
		if st.Bytes != total || st.Accepted != total {
			t.Errorf("forward stats %+v, want %d bytes accepted and delivered", st, total)
		}
	})
}

func TestOneWayDelay(t *testing.T) {
	for _, bw := range []int64{100_000_000, 0} {
		t.Run(FormatBandwidth(bw), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const rtt = 50 * time.Millisecond
				l := newLink(t, Config{Bandwidth: bw, RTT: rtt})
				defer l.Close()
				p := newPath(t, context.Background(), l)
				msg := make([]byte, 100)
				for _, dir := range []struct {
					name     string
					from, to io.ReadWriter
				}{{"forward", p.client, p.server}, {"reverse", p.server, p.client}} {
					time.Sleep(time.Second) // an idle link
					start := time.Now()
					if _, err := dir.from.Write(msg); err != nil {
						t.Fatal(err)
					}
					if _, err := io.ReadFull(dir.to, msg); err != nil {
						t.Fatal(err)
					}
					got := time.Since(start)
					t.Logf("%s: 100 bytes in %v", dir.name, got)
					if got < rtt/2 || !within(float64(got), float64(rtt/2), 0.02) {
						t.Errorf("%s: 100 bytes took %v, want %v (+2%%)", dir.name, got, rtt/2)
					}
				}
				// The EOF crosses the link too, after the data.
				start := time.Now()
				p.client.CloseWrite()
				if n, err := p.server.Read(msg); n != 0 || err != io.EOF {
					t.Fatalf("server Read after client CloseWrite = %d, %v; want EOF", n, err)
				}
				if got := time.Since(start); got != rtt/2 {
					t.Errorf("EOF took %v, want %v", got, rtt/2)
				}
				p.server.Close()
				<-p.relayed
			})
		})
	}
}

func TestBDPInFlightAtSteadyState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			bw  = 100_000_000
			rtt = 50 * time.Millisecond
		)
		l := newLink(t, Config{Bandwidth: bw, RTT: rtt})
		defer l.Close()
		p := newPath(t, context.Background(), l)
		go writeStream(p.client, 1<<40, 64<<10)
		go (&streamReader{r: p.server}).readAll()

		time.Sleep(2 * time.Second)
		bdp := BDP(bw, rtt)
		for range 10 {
			st := l.Stats().Forward
			// The chunk being serialized counts as in flight too.
			if st.InFlight < bdp || st.InFlight > bdp+2*int64(l.chunk) {
				t.Errorf("in flight %d bytes, want one BDP, %d, plus up to two chunks of %d", st.InFlight, bdp, l.chunk)
			}
			if held := st.Queued + st.InFlight; held > l.Window() {
				t.Errorf("link holds %d bytes of one connection, above the window %d", held, l.Window())
			}
			time.Sleep(37 * time.Millisecond)
		}
		t.Logf("window %d, BDP %d, stats %+v", l.Window(), bdp, l.Stats().Forward)
		p.client.Close()
		p.server.Close()
		<-p.relayed
	})
}

func TestSmallWindowLimitsRateToWindowPerRTT(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			bw     = 100_000_000
			rtt    = 50 * time.Millisecond
			window = 64 << 10
		)
		l := newLink(t, Config{Bandwidth: bw, RTT: rtt, Window: window})
		defer l.Close()
		p := newPath(t, context.Background(), l)
		go writeStream(p.client, 1<<40, 64<<10)
		var at1, at3 atomic.Int64
		start := time.Now()
		s := &streamReader{r: p.server, onRead: func(n int64) {
			switch since := time.Since(start); {
			case since <= time.Second:
				at1.Store(n)
			case since <= 3*time.Second:
				at3.Store(n)
			}
		}}
		go s.readAll()
		time.Sleep(3 * time.Second)
		rate := float64(at3.Load()-at1.Load()) * 8 / 2
		want := float64(window) * 8 / rtt.Seconds()
		t.Logf("window-limited rate %.2f Mbit/s, window/RTT %.2f Mbit/s", rate/1e6, want/1e6)
		// Each chunk also spends its serialization time (~1 ms) in the loop.
		if !within(rate, want, 0.05) {
			t.Errorf("rate %.2f Mbit/s, want window/RTT = %.2f within 5%%", rate/1e6, want/1e6)
		}
		p.client.Close()
		p.server.Close()
		<-p.relayed
	})
}

func TestFairnessBetweenConnections(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			bw  = 100_000_000
			rtt = 20 * time.Millisecond
		)
		l := newLink(t, Config{Bandwidth: bw, RTT: rtt})
		defer l.Close()
		start := time.Now()
		var got [2]atomic.Int64 // bytes each received in [1.5 s, 3.5 s)
		var paths [2]path
		for i := range paths {
			if i == 1 {
				time.Sleep(500 * time.Millisecond) // the second joins late
			}
			p := newPath(t, context.Background(), l)
			paths[i] = p
			go writeStream(p.client, 1<<40, 64<<10)
			var base int64 = -1
			go (&streamReader{r: p.server, onRead: func(n int64) {
				switch since := time.Since(start); {
				case since < 1500*time.Millisecond:
				case since < 3500*time.Millisecond:
					if base < 0 {
						base = n
					}
					got[i].Store(n - base)
				}
			}}).readAll()
		}
		time.Sleep(4 * time.Second)
		half := float64(bw) / 8 * 2 / 2
		n0, n1 := got[0].Load(), got[1].Load()
		for i, n := range []int64{n0, n1} {
			t.Logf("connection %d: %.2f Mbit/s", i, float64(n)*8/2/1e6)
			if !within(float64(n), half, 0.10) {
				t.Errorf("connection %d moved %d bytes in 2 s, want half the link, %.0f, within 10%%", i, n, half)
			}
		}
		if sum := float64(n0 + n1); !within(sum, 2*half, 0.02) {
			t.Errorf("both moved %.0f bytes in 2 s, want the link's %.0f", sum, 2*half)
		}
		for _, p := range paths {
			p.client.Close()
			p.server.Close()
			<-p.relayed
		}
	})
}

func TestJitterStaysInBoundsWithoutReordering(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			rtt    = 50 * time.Millisecond
			jitter = 10 * time.Millisecond
			n      = 500
		)
		l := newLink(t, Config{Bandwidth: 100_000_000, RTT: rtt, Jitter: jitter, Seed: 7})
		defer l.Close()
		p := newPath(t, context.Background(), l)
		sent := make([]time.Time, n)
		go func() {
			for i := range n {
				sent[i] = time.Now()
				p.client.Write([]byte{byte(i), byte(i >> 8)})
				time.Sleep(time.Millisecond)
			}
			p.client.CloseWrite()
		}()
		lo, hi := time.Hour, time.Duration(0)
		for i := range n {
			var b [2]byte
			if _, err := io.ReadFull(p.server, b[:]); err != nil {
				t.Fatal(err)
			}
			if got := int(b[0]) | int(b[1])<<8; got != i {
				t.Fatalf("message %d arrived as number %d", got, i)
			}
			d := time.Since(sent[i])
			lo, hi = min(lo, d), max(hi, d)
		}
		t.Logf("one-way delay in [%v, %v]", lo, hi)
		// A 2-byte chunk serializes in 160 ns at 100 Mbit/s.
		if lo < rtt/2 || hi > rtt/2+jitter+time.Microsecond {
			t.Errorf("delays in [%v, %v], want within [%v, %v]", lo, hi, rtt/2, rtt/2+jitter)
		}
		if hi-lo < jitter/2 {
			t.Errorf("delays spread over %v only; is jitter applied?", hi-lo)
		}
		p.server.Close()
		<-p.relayed
	})
}

func TestJitterKeepsBulkStreamIntact(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const total = 5_000_000
		l := newLink(t, Config{Bandwidth: 100_000_000, RTT: 20 * time.Millisecond, Jitter: 5 * time.Millisecond, Seed: 1})
		defer l.Close()
		p := newPath(t, context.Background(), l)
		go func() {
			writeStream(p.client, total, 1000)
			p.client.CloseWrite()
		}()
		s := &streamReader{r: p.server}
		if err := s.readAll(); err != nil || s.n != total {
			t.Fatalf("read %d bytes, %v; want %d intact", s.n, err, total)
		}
		p.server.Close()
		<-p.relayed
	})
}

func TestBackpressureBoundsMemory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const total = 8 << 20
		l := newLink(t, Config{Bandwidth: 100_000_000, RTT: 50 * time.Millisecond})
		defer l.Close()
		p := newPath(t, context.Background(), l)
		p.server.Freeze()
		w := &countingWriter{w: p.client}
		wrote := make(chan error, 1)
		go func() {
			if err := writeStream(w, total, 1000); err != nil {
				wrote <- err
				return
			}
			wrote <- p.client.CloseWrite()
		}()
		time.Sleep(10 * time.Second)
		held := w.n.Load()
		// The sender gets as far as its conn's buffer, the window and the
		// receiver's conn buffer (plus one 1000-byte write).
		bound := l.Window() + 2*connCapacity + 1000
		t.Logf("sender blocked after %d bytes (window %d)", held, l.Window())
		if held > bound || held < l.Window() {
			t.Fatalf("sender wrote %d bytes with the receiver frozen, want between the window %d and %d", held, l.Window(), bound)
		}
		st := l.Stats().Forward
		if st.Queued+st.InFlight > l.Window() {
			t.Errorf("link holds %d bytes, above the window %d", st.Queued+st.InFlight, l.Window())
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		time.Sleep(time.Minute)
		synctest.Wait()
		runtime.GC()
		runtime.ReadMemStats(&after)
		if now := w.n.Load(); now != held {
			t.Errorf("sender went on from %d to %d bytes while the receiver was frozen", held, now)
		}
		if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 1<<20 {
			t.Errorf("heap grew by %d bytes while blocked", grew)
		}
		p.server.Thaw()
		s := &streamReader{r: p.server}
		if err := s.readAll(); err != nil || s.n != total {
			t.Fatalf("after thaw read %d bytes, %v; want %d", s.n, err, total)
		}
		if err := <-wrote; err != nil {
			t.Fatal(err)
		}
		p.server.Close()
		<-p.relayed
	})
}

func TestUnlimitedPassesStraightThrough(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const total = 4 << 20
		l := newLink(t, Config{})
		defer l.Close()
		p := newPath(t, context.Background(), l)
		start := time.Now()
		go func() {
			writeStream(p.client, total, 64<<10)
			p.client.CloseWrite()
		}()
		s := &streamReader{r: p.server}
		if err := s.readAll(); err != nil || s.n != total {
			t.Fatalf("read %d bytes, %v", s.n, err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("took %v of virtual time, want 0", d)
		}
		p.server.Write([]byte("ok"))
		p.server.CloseWrite()
		if b, err := io.ReadAll(p.client); err != nil || string(b) != "ok" {
			t.Fatalf("reply %q, %v", b, err)
		}
		if err := <-p.relayed; err != nil {
			t.Fatalf("Relay after EOF both ways: %v", err)
		}
		st := l.Stats()
		if st.Forward.Bytes != total || st.Reverse.Bytes != 2 || st.Conns != 0 {
			t.Errorf("stats %+v", st)
		}
		if st.Forward.Queued != 0 || st.Forward.InFlight != 0 {
			t.Errorf("after the relay, forward levels %+v, want 0", st.Forward)
		}
	})
}

func TestHalfCloseKeepsOtherDirection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLink(t, Config{Bandwidth: 10_000_000, RTT: 10 * time.Millisecond})
		defer l.Close()
		p := newPath(t, context.Background(), l)
		go func() {
			writeStream(p.client, 100_000, 4096)
			p.client.CloseWrite()
		}()
		s := &streamReader{r: p.server}
		if err := s.readAll(); err != nil || s.n != 100_000 {
			t.Fatalf("server read %d, %v", s.n, err)
		}
		// The client's EOF did not end the other direction.
		go func() {
			writeStream(p.server, 200_000, 4096)
			p.server.CloseWrite()
		}()
		s = &streamReader{r: p.client}
		if err := s.readAll(); err != nil || s.n != 200_000 {
			t.Fatalf("client read %d, %v", s.n, err)
		}
		if err := <-p.relayed; err != nil {
			t.Fatalf("Relay: %v", err)
		}
	})
}

func TestErrorOnOneSideClosesBoth(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLink(t, Config{Bandwidth: 10_000_000, RTT: 10 * time.Millisecond})
		defer l.Close()
		p := newPath(t, context.Background(), l)
		wrote := make(chan error, 1)
		go func() { wrote <- writeStream(p.client, 1<<40, 4096) }()
		time.Sleep(100 * time.Millisecond)
		p.server.Close() // the relay's next write to it fails
		err := <-p.relayed
		if err == nil {
			t.Fatal("Relay returned nil after the receiver went away")
		}
		t.Logf("Relay: %v", err)
		if err := <-wrote; !errors.Is(err, io.ErrClosedPipe) {
			t.Errorf("sender's write: %v, want the conn closed by the relay", err)
		}
		p.client.Close()
	})
}

func TestContextEndsRelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLink(t, Config{Bandwidth: 10_000_000, RTT: 10 * time.Millisecond})
		defer l.Close()
		ctx, cancel := context.WithCancel(context.Background())
		p := newPath(t, ctx, l)
		go writeStream(p.client, 1<<40, 4096)
		go io.Copy(io.Discard, p.server)
		time.Sleep(time.Second)
		cancel()
		if err := <-p.relayed; !errors.Is(err, context.Canceled) {
			t.Errorf("Relay after cancel: %v, want context.Canceled", err)
		}
		p.client.Close()
		p.server.Close()
	})
}

func TestCloseEndsRelays(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLink(t, Config{Bandwidth: 10_000_000, RTT: 10 * time.Millisecond, Jitter: time.Millisecond})
		var paths []path
		for range 3 {
			p := newPath(t, context.Background(), l)
			go writeStream(p.client, 1<<40, 4096)
			go writeStream(p.server, 1<<40, 4096)
			go io.Copy(io.Discard, p.server)
			go io.Copy(io.Discard, p.client)
			paths = append(paths, p)
		}
		time.Sleep(time.Second)
		if n := l.Stats().Conns; n != 3 {
			t.Errorf("Conns = %d, want 3", n)
		}
		l.Close()
		for _, p := range paths {
			if err := <-p.relayed; !errors.Is(err, ErrClosed) {
				t.Errorf("Relay after Close: %v, want ErrClosed", err)
			}
			p.client.Close()
			p.server.Close()
		}
		p := newPath(t, context.Background(), l)
		if err := <-p.relayed; !errors.Is(err, ErrClosed) {
			t.Errorf("Relay on a closed link: %v, want ErrClosed", err)
		}
		st := l.Stats()
		for _, d := range []Dir{st.Forward, st.Reverse} {
			if d.Queued != 0 || d.InFlight != 0 {
				t.Errorf("levels after Close %+v, want 0", d)
			}
		}
		// synctest.Test fails if any goroutine of the link is left.
	})
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n atomic.Int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}

func TestTinyWritesKeepTheirRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// 100,000 one-byte writes a second: 5,000 of them would be in
		// flight, more than the chunks a flow may hold, so the relay's
		// reads coalesce them; they must still arrive at the rate sent.
		const n = 100_000
		l := newLink(t, Config{Bandwidth: 100_000_000, RTT: 50 * time.Millisecond})
		defer l.Close()
		p := newPath(t, context.Background(), l)
		start := time.Now()
		go func() {
			w := writerFunc(func(b []byte) (int, error) {
				k, err := p.client.Write(b)
				time.Sleep(10 * time.Microsecond)
				return k, err
			})
			writeStream(w, n, 1)
			p.client.CloseWrite()
		}()
		s := &streamReader{r: p.server}
		if err := s.readAll(); err != nil || s.n != n {
			t.Fatalf("read %d bytes, %v; want %d", s.n, err, n)
		}
		if d := time.Since(start); d > time.Second+30*time.Millisecond {
			t.Errorf("%d one-byte writes 10us apart took %v to cross, want 1s + RTT/2", n, d)
		}
		p.server.Close()
		<-p.relayed
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
