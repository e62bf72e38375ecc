package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/vmigrate/vmigrate/internal/leakcheck"
)

// fakeQEMU listens like a destination QEMU's incoming socket: for each
// connection it reads to EOF and answers with the length and SHA-256 of what
// it read, then closes.
func fakeQEMU(t *testing.T, network, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				n, s, err := readAllSum(c)
				if err != nil {
					t.Errorf("fake QEMU read: %v", err)
					return
				}
				fmt.Fprintf(c, "%d %x", n, s)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln
}

// migrate connects to a source port as QEMU would, sends data, half-closes
// and checks the fake QEMU's answer.
func migrate(t *testing.T, addr net.Addr, data []byte) {
	c, err := net.Dial(addr.Network(), addr.String())
	if err != nil {
		t.Errorf("connect to source port: %v", err)
		return
	}
	defer c.Close()
	if _, err := c.Write(data); err != nil {
		t.Errorf("send: %v", err)
		return
	}
	c.(interface{ CloseWrite() error }).CloseWrite()
	reply, err := io.ReadAll(c)
	if err != nil {
		t.Errorf("reply: %v", err)
	}
	if want := fmt.Sprintf("%d %x", len(data), sum(data)); string(reply) != want {
		t.Errorf("reply %q, want %q", reply, want)
	}
}

func TestSourceDest(t *testing.T) {
	leakcheck.Check(t)
	dir := t.TempDir()
	ramQEMU := fakeQEMU(t, "tcp", "127.0.0.1:0")
	diskQEMU := fakeQEMU(t, "unix", filepath.Join(dir, "nbd.sock"))
	ctx := testCtx(t)
	log := zaptest.NewLogger(t)

	d, err := StartDest(ctx, DestConfig{
		Listen: "127.0.0.1:0",
		Forward: ForwardByName(map[string]string{
			"ram":      ramQEMU.Addr().String(),
			"disk:vda": "unix:" + diskQEMU.Addr().String(),
		}),
		Tunnel: Config{PSK: testKey},
		Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	src, err := StartSource(ctx, SourceConfig{
		Ports: []Port{
			{Name: "ram", Addr: "unix:" + filepath.Join(dir, "mig.sock")},
			{Name: "disk:vda", Addr: "tcp:127.0.0.1:0"},
			{Name: "disk:vdb", Addr: "127.0.0.1:0"}, // no forward on the dest
		},
		Peer:   d.Addr().String(),
		Tunnel: Config{PSK: testKey},
		Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()

	// Several connections per port at once, as multifd would.
	var wg sync.WaitGroup
	var total int64
	for i := 0; i < 3; i++ {
		for _, addr := range src.Addrs()[:2] {
			data := randBytes(t, 1<<20+i*1000)
			total += int64(len(data))
			wg.Add(1)
			go func() {
				defer wg.Done()
				migrate(t, addr, data)
			}()
		}
	}
	wg.Wait()

	// A name the dest cannot forward: the local connection is cut, not hung.
	// (The reset can come so fast that it races connect itself.)
	if c, err := net.Dial("tcp", src.Addrs()[2].String()); err == nil {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(c); err == nil {
			t.Error("connection to an unforwarded channel ended cleanly")
		}
		c.Close()
	}

	waitFor(t, func() bool {
		st := src.Stats()
		done := 0
		for _, r := range st.Relays {
			if r.Done {
				done++
			}
		}
		return done == 7
	})
	st := src.Stats()
	var up int64
	for _, r := range st.Relays {
		if r.Name != "disk:vdb" && r.Err != nil {
			t.Errorf("relay %s: %v", r.Name, r.Err)
		}
		up += r.ToPeer
	}
	if up != total || st.ByName["ram"] != 3 || st.ByName["disk:vda"] != 3 || st.Session.BytesSent != total {
		t.Errorf("source stats: %d bytes up of %d, %+v", up, total, st)
	}
	if dst := d.Stats(); dst.Sessions != 1 || dst.Session.BytesReceived != total || len(dst.Relays) != 6 {
		t.Errorf("dest stats %+v", dst)
	}
	t.Logf("wire overhead: %d wire bytes for %d payload bytes (%.2f%%)", st.Session.WireBytesSent, total,
		100*float64(st.Session.WireBytesSent-total)/float64(total))

	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// With a wrong key the source fails to start, the dest refuses the
// connection, and the forward side is never dialled.
func TestWrongKeyNothingForwarded(t *testing.T) {
	leakcheck.Check(t)
	ctx := testCtx(t)
	var dials atomic.Int32
	d, err := StartDest(ctx, DestConfig{
		Listen: "127.0.0.1:0",
		Forward: func(ctx context.Context, name string) (net.Conn, error) {
			dials.Add(1)
			return nil, errors.New("must not be called")
		},
		Tunnel: Config{PSK: testKey},
		Logger: zaptest.NewLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	_, err = StartSource(ctx, SourceConfig{
		Ports:  []Port{{Name: "ram", Addr: "127.0.0.1:0"}},
		Peer:   d.Addr().String(),
		Tunnel: Config{PSK: []byte("a wrong key that is long enough!")},
	})
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("source: got %v, want ErrAuth", err)
	}
	waitFor(t, func() bool { return d.Stats().HandshakeFailures == 1 })
	if st := d.Stats(); !errors.Is(st.LastError, ErrAuth) || st.Sessions != 0 {
		t.Fatalf("dest stats %+v", st)
	}
	// A raw client that skips authentication gets nowhere either.
	c, err := net.Dial("tcp", d.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write(AppendHello(nil, testHello(RoleClient)))
	c.Write(AppendFrame(nil, Frame{Type: FrameOpen, Channel: 1, Payload: []byte("ram")}))
	io.Copy(io.Discard, c)
	c.Close()
	waitFor(t, func() bool { return d.Stats().HandshakeFailures == 2 })
	if n := dials.Load(); n != 0 {
		t.Fatalf("forward dialled %d times", n)
	}
}

// RunSource returns nil when its ctx ends, and an error when the tunnel
// session fails; RunDest returns when its ctx ends.
func TestRunSourceDest(t *testing.T) {
	leakcheck.Check(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	destCtx, stopDest := context.WithCancel(context.Background())
	destDone := make(chan error, 1)
	go func() {
		destDone <- RunDest(destCtx, DestConfig{Listener: ln, Forward: ForwardTo("127.0.0.1:1"), Tunnel: Config{Insecure: true}})
	}()
	srcCtx, stopSrc := context.WithCancel(context.Background())
	srcDone := make(chan error, 1)
	cfg := SourceConfig{Ports: []Port{{Name: "ram", Addr: "127.0.0.1:0"}}, Peer: ln.Addr().String(), Tunnel: Config{Insecure: true}}
	go func() { srcDone <- RunSource(srcCtx, cfg) }()
	time.Sleep(100 * time.Millisecond)
	stopSrc()
	if err := <-srcDone; err != nil {
		t.Fatalf("RunSource after cancel: %v", err)
	}
	// A source whose dest shuts down (a normal GOAWAY) ends too, without error.
	go func() { srcDone <- RunSource(context.Background(), cfg) }()
	time.Sleep(100 * time.Millisecond)
	stopDest()
	if err := <-destDone; err != nil {
		t.Fatalf("RunDest: %v", err)
	}
	select {
	case err := <-srcDone:
		if err != nil {
			t.Fatalf("RunSource after the dest closed normally: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RunSource did not end with its session")
	}
}
