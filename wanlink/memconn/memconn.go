// Package memconn provides buffered in-memory network connections for
// tests. Unlike net.Pipe, which is unbuffered and so hides the bugs of
// proxies that only work while someone reads, each direction of a memconn
// pair holds up to a fixed number of bytes: a writer returns as soon as its
// bytes fit and blocks only when the buffer is full, like a socket.
//
// A Conn can be frozen, which stops it from reading: its Reads block and
// the peer's writes fill the buffer and then block. Tests use this to make
// backpressure happen on purpose.
//
// Blocking is done with sync.Cond and deadlines with time.AfterFunc, so
// conns created inside a testing/synctest bubble block durably and run on
// the bubble's virtual clock.
package memconn

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// Addr is the address of a memconn endpoint.
type Addr string

// Network returns "memconn".
func (Addr) Network() string { return "memconn" }

func (a Addr) String() string { return string(a) }

// pipe is one direction of a pair: a ring of bytes written by one Conn and
// read by the other, and the state both ends share.
type pipe struct {
	mu   sync.Mutex
	cond sync.Cond

	buf  []byte // ring, len(buf) is the capacity
	r, n int    // read offset and bytes held

	wclosed bool // the writer half-closed or closed: EOF after the bytes held
	rclosed bool // the reader closed: writes fail
	frozen  bool // the reader may not read

	rdeadline, wdeadline time.Time
	rtimer, wtimer       *time.Timer
}

func newPipe(capacity int) *pipe {
	p := &pipe{buf: make([]byte, capacity)}
	p.cond.L = &p.mu
	return p
}

// Conn is one end of an in-memory connection. It implements net.Conn and
// CloseWrite. All methods are safe for concurrent use.
type Conn struct {
	in, out       *pipe // in: bytes for c to read; out: bytes c writes
	local, remote Addr

	mu     sync.Mutex
	closed bool
}

// Pipe returns the two ends of a connection. Each direction buffers up to
// capacity bytes (at least 1).
func Pipe(capacity int) (*Conn, *Conn) {
	return pipeNamed(capacity, "memconn-a", "memconn-b")
}

func pipeNamed(capacity int, a, b Addr) (*Conn, *Conn) {
	capacity = max(capacity, 1)
	ab, ba := newPipe(capacity), newPipe(capacity)
	return &Conn{in: ba, out: ab, local: a, remote: b},
		&Conn{in: ab, out: ba, local: b, remote: a}
}

func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "memconn", Source: c.local, Addr: c.remote, Err: err}
}

// Read reads buffered bytes, blocking while there are none, while c is
// frozen, or until the read deadline. It returns io.EOF once the peer has
// closed its writing half and every byte it wrote has been read.
func (c *Conn) Read(b []byte) (int, error) {
	p := c.in
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		switch {
		case p.rclosed:
			return 0, c.opError("read", net.ErrClosed)
		case expired(p.rdeadline):
			return 0, c.opError("read", os.ErrDeadlineExceeded)
		case len(b) == 0:
			return 0, nil
		case !p.frozen && p.n > 0:
			k := 0
			for k < len(b) && p.n > 0 {
				end := min(p.r+p.n, len(p.buf))
				m := copy(b[k:], p.buf[p.r:end])
				k += m
				p.r = (p.r + m) % len(p.buf)
				p.n -= m
			}
			p.cond.Broadcast()
			return k, nil
		case !p.frozen && p.wclosed:
			return 0, io.EOF
		}
		p.cond.Wait()
	}
}

// Write copies b into the buffer, blocking while it is full. It fails if c
// closed its writing half, if the peer closed, or at the write deadline; n
// counts the bytes buffered before that.
func (c *Conn) Write(b []byte) (int, error) {
	p := c.out
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for {
		switch {
		case p.wclosed:
			return n, c.opError("write", net.ErrClosed)
		case p.rclosed:
			return n, c.opError("write", io.ErrClosedPipe)
		case expired(p.wdeadline):
			return n, c.opError("write", os.ErrDeadlineExceeded)
		case n == len(b):
			return n, nil
		case p.n < len(p.buf):
			for n < len(b) && p.n < len(p.buf) {
				w := (p.r + p.n) % len(p.buf)
				end := len(p.buf)
				if w < p.r {
					end = p.r
				}
				m := copy(p.buf[w:end], b[n:])
				n += m
				p.n += m
			}
			p.cond.Broadcast()
			continue
		}
		p.cond.Wait()
	}
}

// CloseWrite half-closes c: the peer reads the bytes already written and
// then io.EOF; c can still read.
func (c *Conn) CloseWrite() error {
	p := c.out
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.wclosed {
		return c.opError("close", net.ErrClosed)
	}
	p.wclosed = true
	p.cond.Broadcast()
	return nil
}

// Close closes both halves. The peer still reads what c wrote before, then
// io.EOF; what the peer writes from now on fails. Bytes c had not read are
// dropped.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.opError("close", net.ErrClosed)
	}
	c.closed = true
	c.mu.Unlock()
	for _, p := range []*pipe{c.in, c.out} {
		p.mu.Lock()
		if p == c.in {
			p.rclosed = true
			p.r, p.n = 0, 0
			stop(p.rtimer)
		} else {
			p.wclosed = true
			stop(p.wtimer)
		}
		p.cond.Broadcast()
		p.mu.Unlock()
	}
	return nil
}

// Freeze stops c from reading: its Reads block (even with bytes buffered)
// until Thaw, so the peer's writes fill the buffer and then block.
func (c *Conn) Freeze() { c.setFrozen(true) }

// Thaw lets c read again after Freeze.
func (c *Conn) Thaw() { c.setFrozen(false) }

func (c *Conn) setFrozen(v bool) {
	p := c.in
	p.mu.Lock()
	p.frozen = v
	p.cond.Broadcast()
	p.mu.Unlock()
}

// Buffered reports how many bytes the peer wrote that c has not read.
func (c *Conn) Buffered() int {
	p := c.in
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// Capacity reports how many bytes each direction can buffer.
func (c *Conn) Capacity() int { return len(c.in.buf) }

// LocalAddr returns c's address.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets both the read and the write deadline.
func (c *Conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline makes Reads fail with os.ErrDeadlineExceeded from t on;
// the zero time clears it.
func (c *Conn) SetReadDeadline(t time.Time) error {
	p := c.in
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rdeadline = t
	p.rtimer = rearm(p, p.rtimer, t)
	return nil
}

// SetWriteDeadline makes Writes fail with os.ErrDeadlineExceeded from t
// on; the zero time clears it.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	p := c.out
	p.mu.Lock()
	defer p.mu.Unlock()
	p.wdeadline = t
	p.wtimer = rearm(p, p.wtimer, t)
	return nil
}

// rearm replaces a deadline timer; the new one wakes the waiters of p when
// t passes. Called with p.mu held.
func rearm(p *pipe, old *time.Timer, t time.Time) *time.Timer {
	stop(old)
	p.cond.Broadcast()
	if t.IsZero() {
		return nil
	}
	return time.AfterFunc(time.Until(t), func() {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	})
}

func stop(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

func expired(deadline time.Time) bool {
	return !deadline.IsZero() && !time.Now().Before(deadline)
}

// ErrListenerClosed is returned by Accept and Dial on a closed Listener.
var ErrListenerClosed = errors.New("memconn: listener closed")

// Listener is an in-memory net.Listener: Dial hands one end of a new pair
// to Accept.
type Listener struct {
	addr     Addr
	capacity int
	conns    chan *Conn
	done     chan struct{}
	once     sync.Once
}

// Listen returns a Listener named addr whose connections buffer capacity
// bytes in each direction.
func Listen(addr string, capacity int) *Listener {
	return &Listener{
		addr:     Addr(addr),
		capacity: capacity,
		conns:    make(chan *Conn),
		done:     make(chan struct{}),
	}
}

// Dial connects to l. It blocks until Accept takes the connection, ctx
// ends, or l closes.
func (l *Listener) Dial(ctx context.Context) (net.Conn, error) {
	client, server := pipeNamed(l.capacity, l.addr+"-client", l.addr)
	select {
	case l.conns <- server:
		return client, nil
	case <-ctx.Done():
		return nil, &net.OpError{Op: "dial", Net: "memconn", Addr: l.addr, Err: ctx.Err()}
	case <-l.done:
		return nil, &net.OpError{Op: "dial", Net: "memconn", Addr: l.addr, Err: ErrListenerClosed}
	}
}

// Accept waits for the next Dial.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, &net.OpError{Op: "accept", Net: "memconn", Addr: l.addr, Err: net.ErrClosed}
	}
}

// Close makes pending and future Accepts and Dials fail.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr returns the listener's address.
func (l *Listener) Addr() net.Addr { return l.addr }
