package tunnel

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"testing"
)

// Throughput of the tunnel over loopback TCP, against the same bytes over
// plain TCP and plain TLS 1.3, to show what framing and flow control cost:
//
//	go test -run '^$' -bench Throughput -benchtime 2s ./tunnel/
const benchChunk = 1 << 20

func BenchmarkThroughput(b *testing.B) {
	b.Run("tcp", func(b *testing.B) {
		c, s := tcpPair(b)
		benchCopy(b, c, s)
	})
	b.Run("tls13", func(b *testing.B) {
		c, s := tcpPair(b)
		cert, err := ephemeralCert()
		if err != nil {
			b.Fatal(err)
		}
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
		ts := tls.Server(s, &tls.Config{Certificates: []tls.Certificate{cert}})
		go ts.Handshake()
		if err := tc.Handshake(); err != nil {
			b.Fatal(err)
		}
		benchCopy(b, tc, ts)
	})
	for _, mode := range []struct {
		name string
		cfg  Config
	}{
		{"tunnel-insecure", Config{Insecure: true}},
		{"tunnel-psk", Config{PSK: testKey}},
	} {
		for _, n := range []int{1, 4} {
			b.Run(mode.name+"/channels="+string(rune('0'+n)), func(b *testing.B) {
				cs, ss := sessionPair(b, mode.cfg, mode.cfg)
				benchChannels(b, cs, ss, n)
			})
		}
	}
}

// benchCopy writes b.N chunks to w and reads them from r.
func benchCopy(b *testing.B, w, r net.Conn) {
	defer w.Close()
	defer r.Close()
	buf := make([]byte, benchChunk)
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.CopyN(io.Discard, r, int64(b.N)*benchChunk)
	}()
	b.SetBytes(benchChunk)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := w.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	<-done
}

// benchChannels writes b.N chunks spread over n channels.
func benchChannels(b *testing.B, cs, ss *Session, n int) {
	ctx := testCtx(b)
	var readers sync.WaitGroup
	readers.Add(n)
	go func() {
		for i := 0; i < n; i++ {
			ch, err := ss.Accept(ctx)
			if err != nil {
				b.Error(err)
				return
			}
			go func() {
				defer readers.Done()
				io.CopyBuffer(io.Discard, ch, make([]byte, 256<<10))
			}()
		}
	}()
	chans := make([]*Channel, n)
	for i := range chans {
		ch, err := cs.OpenChannel(ctx, "bench")
		if err != nil {
			b.Fatal(err)
		}
		chans[i] = ch
	}
	b.SetBytes(benchChunk)
	b.ResetTimer()
	var writers sync.WaitGroup
	for i, ch := range chans {
		writers.Add(1)
		go func() {
			defer writers.Done()
			buf := make([]byte, benchChunk)
			for j := i; j < b.N; j += n {
				if _, err := ch.Write(buf); err != nil {
					b.Error(err)
					return
				}
			}
			ch.CloseWrite()
		}()
	}
	writers.Wait()
	readers.Wait()
	b.StopTimer()
}
