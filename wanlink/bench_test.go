package wanlink

import (
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkRelayLoopback measures the relay's own throughput on loopback
// TCP with no bandwidth limit and no delay, next to the same transfer
// without the relay: the emulator must not be the bottleneck of the links
// it emulates.
//
//	go test -run '^$' -bench RelayLoopback ./wanlink/
func BenchmarkRelayLoopback(b *testing.B) {
	b.Run("direct", func(b *testing.B) { benchLoopback(b, nil) })
	b.Run("unlimited", func(b *testing.B) {
		l, err := New(Config{}, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		benchLoopback(b, l)
	})
}

// benchLoopback sends b.N MiB to a discarding server, through Serve on l
// if l is not nil.
func benchLoopback(b *testing.B, l *Link) {
	sink, received := discardServer(b)
	addr := sink
	if l != nil {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		addr, _ = serveFor(b, ctx, l, sink)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	<-received // every byte has arrived
}

// BenchmarkRelay100Mbit50ms runs a bulk transfer for two seconds of real
// time through a 100 Mbit/s, 50 ms link and reports the rate the receiver
// saw after the first half second (Mbit/s) and the round trip of one byte
// on the idle link (rtt-ms). On virtual time the model is exact
// (TestRateIsHonoured); this shows what timers and scheduling on a real,
// busy machine take from it.
//
//	go test -run '^$' -bench Relay100Mbit50ms ./wanlink/
func BenchmarkRelay100Mbit50ms(b *testing.B) {
	const (
		bw     = 100_000_000
		rtt    = 50 * time.Millisecond
		warmup = 500 * time.Millisecond
		run    = 2 * time.Second
	)
	var rates, rtts []float64
	for b.Loop() {
		l, err := New(Config{Bandwidth: bw, RTT: rtt}, nil)
		if err != nil {
			b.Fatal(err)
		}
		var got atomic.Int64
		sink := echoFirstThenCount(b, &got)
		ctx, cancel := context.WithCancel(context.Background())
		addr, _ := serveFor(b, ctx, l, sink)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		one := make([]byte, 1)
		c.Write(one)
		if _, err := io.ReadFull(c, one); err != nil {
			b.Fatal(err)
		}
		rtts = append(rtts, float64(time.Since(start))/float64(time.Millisecond))

		go func() {
			buf := make([]byte, 256<<10)
			for {
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}()
		time.Sleep(warmup)
		n0, t0 := got.Load(), time.Now()
		time.Sleep(run - warmup)
		n1, t1 := got.Load(), time.Now()
		rates = append(rates, float64(n1-n0)*8/t1.Sub(t0).Seconds()/1e6)
		c.Close()
		cancel()
		l.Close()
	}
	b.ReportMetric(mean(rates), "Mbit/s")
	b.ReportMetric(mean(rtts), "rtt-ms")
	b.ReportMetric(0, "ns/op")
}

func mean(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// serveFor runs Serve on a loopback listener forwarding to addr until ctx
// ends.
func serveFor(b *testing.B, ctx context.Context, l *Link, addr string) (string, <-chan error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan error, 1)
	go func() {
		var d net.Dialer
		served <- Serve(ctx, ln, func(ctx context.Context) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}, l)
	}()
	b.Cleanup(func() { <-served })
	return ln.Addr().String(), served
}

// discardServer accepts one connection and discards what it reads; the
// channel closes at its EOF.
func discardServer(b *testing.B) (string, <-chan struct{}) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer ln.Close()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(io.Discard, c)
	}()
	return ln.Addr().String(), done
}

// echoFirstThenCount accepts one connection, sends its first byte back,
// then counts the rest into n.
func echoFirstThenCount(b *testing.B, n *atomic.Int64) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		defer ln.Close()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		one := make([]byte, 1)
		if _, err := io.ReadFull(c, one); err != nil {
			return
		}
		c.Write(one)
		buf := make([]byte, 256<<10)
		for {
			k, err := c.Read(buf)
			n.Add(int64(k))
			if err != nil {
				return
			}
		}
	}()
	return ln.Addr().String()
}
