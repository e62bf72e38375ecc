package migrate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
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
