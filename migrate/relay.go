package migrate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
)

// Relay sits between the source QEMU and the destination's incoming
// socket and counts the bytes of the migration stream. It accepts one
// connection: a migration is one stream (no multifd).
type Relay struct {
	ln   net.Listener
	dial func(ctx context.Context) (net.Conn, error)

	toDest, toSource atomic.Int64
	done             chan struct{}
	err              error
	closeOnce        sync.Once
}

// NewRelay listens on a unix socket at path and forwards the one
// connection it accepts to whatever dial reaches.
func NewRelay(path string, dial func(ctx context.Context) (net.Conn, error)) (*Relay, error) {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	return &Relay{ln: ln, dial: dial, done: make(chan struct{})}, nil
}

// URI is the migration URI the source should send to.
func (r *Relay) URI() string { return "unix:" + r.ln.Addr().String() }

// BytesToDest counts the stream bytes the source sent.
func (r *Relay) BytesToDest() int64 { return r.toDest.Load() }

// BytesToSource counts bytes the destination sent back (return path).
func (r *Relay) BytesToSource() int64 { return r.toSource.Load() }

// Serve accepts the source's connection and relays until both directions
// end or ctx ends. It returns the first error of either direction.
func (r *Relay) Serve(ctx context.Context) error {
	defer close(r.done)
	stop := context.AfterFunc(ctx, func() { r.ln.Close() })
	defer stop()
	src, err := r.ln.Accept()
	r.ln.Close()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("relay: accept: %w", err)
	}
	defer src.Close()
	dst, err := r.dial(ctx)
	if err != nil {
		return fmt.Errorf("relay: dial destination: %w", err)
	}
	defer dst.Close()
	stopConns := context.AfterFunc(ctx, func() { src.Close(); dst.Close() })
	defer stopConns()

	errs := make(chan error, 2)
	go func() { errs <- pipe(dst, src, &r.toDest) }()
	go func() { errs <- pipe(src, dst, &r.toSource) }()
	var first error
	for range 2 {
		if err := <-errs; err != nil && first == nil {
			first = err
			src.Close()
			dst.Close()
		}
	}
	return first
}

// Close stops a relay that has not accepted yet.
func (r *Relay) Close() { r.closeOnce.Do(func() { r.ln.Close() }) }

// pipe copies from src to dst, counting, and half-closes dst at EOF so
// the far side sees the stream end.
func pipe(dst, src net.Conn, n *atomic.Int64) error {
	buf := make([]byte, 256<<10)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return werr
			}
			n.Add(int64(k))
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if cw, ok := dst.(interface{ CloseWrite() error }); ok {
					cw.CloseWrite()
				}
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
	}
}

// Transport carries the migration stream from the source QEMU to the
// destination's incoming socket, and counts it. Run opens it after the
// destination listens and closes it when the migration has ended.
type Transport interface {
	// Name says what the path is ("relay", "wan"), for the result.
	Name() string
	// Open prepares the path to the destination's incomingURI and returns
	// the URI the source QEMU should migrate to.
	Open(ctx context.Context, incomingURI string) (sourceURI string, err error)
	// Counts returns the bytes the source sent into the path, and the
	// bytes that crossed an emulated link (0 if the path has none).
	Counts() (stream, wire int64)
	// Err says why the path failed, or nil.
	Err() error
	Close() error
}

// RelayTransport is a Relay between two QEMUs on this host, for a
// destination listening on a unix socket.
type RelayTransport struct {
	Dir string // where the relay's own socket goes
	// Socket, when set, is the relay's socket path instead of one in Dir.
	Socket string

	mu     sync.Mutex // guards relay: Counts runs beside Open
	relay  *Relay
	cancel context.CancelFunc
	done   chan error
	err    error
	once   sync.Once
}

// Name implements Transport.
func (t *RelayTransport) Name() string { return "relay" }

// ListenAt makes Open listen at path.
func (t *RelayTransport) ListenAt(path string) { t.Socket = path }

// Open implements Transport.
func (t *RelayTransport) Open(ctx context.Context, incomingURI string) (string, error) {
	target, ok := strings.CutPrefix(incomingURI, "unix:")
	if !ok {
		return "", fmt.Errorf("relay: destination %s is not a unix socket", incomingURI)
	}
	sock := t.Socket
	if sock == "" {
		sock = filepath.Join(t.Dir, "relay.sock")
	}
	relay, err := NewRelay(sock, func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", target)
	})
	if err != nil {
		return "", err
	}
	t.mu.Lock()
	t.relay = relay
	t.mu.Unlock()
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	t.cancel = cancel
	t.done = make(chan error, 1)
	go func() { t.done <- relay.Serve(rctx) }() // ends with the stream, or at Close
	return relay.URI(), nil
}

// Counts implements Transport.
func (t *RelayTransport) Counts() (int64, int64) {
	t.mu.Lock()
	relay := t.relay
	t.mu.Unlock()
	if relay == nil {
		return 0, 0
	}
	return relay.BytesToDest(), 0
}

// Err implements Transport.
func (t *RelayTransport) Err() error {
	if t.done != nil && t.err == nil {
		select {
		case t.err = <-t.done:
			t.done = nil
		default:
		}
	}
	return t.err
}

// Close implements Transport.
func (t *RelayTransport) Close() error {
	t.once.Do(func() {
		if t.relay != nil {
			t.relay.Close()
			t.cancel()
			t.Err() // takes the result if Serve has returned
			if t.done != nil {
				t.err = <-t.done
				t.done = nil
			}
		}
	})
	return nil
}
