package tunnel

import (
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// errTimeout is what Read and Write return when their deadline passes; it
// is os.ErrDeadlineExceeded, a net.Error whose Timeout() is true.
var errTimeout error = os.ErrDeadlineExceeded

// Channel is one bidirectional byte stream inside a Session. It implements
// net.Conn, with CloseWrite for a half-close as on a *net.TCPConn.
//
// Flow control: the peer may send at most the receive window (Config.Window)
// of bytes this side has not read yet; Read grants credit back as it
// consumes them. Write sends while it has credit from the peer and blocks
// when it has none, so a stalled reader stalls its writer and no buffer
// grows past the window. Deadlines bound the waiting in Read and Write (for
// data, for credit, for the session's write turn); a frame already being
// written completes, which takes as long as the link needs for it.
type Channel struct {
	s      *Session
	id     uint32
	name   string
	window int // our receive window

	mu          sync.Mutex
	notify      chan struct{} // closed and replaced on every change below
	buf         []byte        // received, unread: buf[r:]
	r           int
	maxBuffered int   // high-water mark of len(buf)-r
	recvAllowed int64 // bytes the peer may still send
	unacked     int   // bytes read but not yet granted back
	recvClosed  bool  // the peer sent CLOSE
	credit      int64 // bytes we may still send
	sentClose   bool  // we queued CLOSE
	closed      bool  // Close was called
	resetErr    error // set when the channel was reset, by either side
	resetLocal  bool  // resetErr came from this side

	wsem   chan struct{} // one token: serializes Writes
	dead   chan struct{} // closed by Close or reset
	rd, wd deadline
	nRead  atomic.Int64
	nWrite atomic.Int64
}

func newChannel(s *Session, id uint32, name string) *Channel {
	return &Channel{
		s:           s,
		id:          id,
		name:        name,
		window:      s.cfg.Window,
		notify:      make(chan struct{}),
		recvAllowed: int64(s.cfg.Window),
		credit:      int64(s.params.peerWindow),
		wsem:        make(chan struct{}, 1),
		dead:        make(chan struct{}),
	}
}

// Name is the name the channel was opened with.
func (c *Channel) Name() string { return c.name }

// ID is the channel's id in the session.
func (c *Channel) ID() uint32 { return c.id }

// Session is the session the channel belongs to.
func (c *Channel) Session() *Session { return c.s }

// ChannelStats are a channel's counters.
type ChannelStats struct {
	Name         string
	ID           uint32
	BytesRead    int64 // returned by Read
	BytesWritten int64 // accepted by Write
	MaxBuffered  int   // most bytes ever held unread: never more than the window
}

// Stats returns the channel's counters.
func (c *Channel) Stats() ChannelStats {
	c.mu.Lock()
	mb := c.maxBuffered
	c.mu.Unlock()
	return ChannelStats{Name: c.name, ID: c.id, BytesRead: c.nRead.Load(), BytesWritten: c.nWrite.Load(), MaxBuffered: mb}
}

// wakeLocked wakes every Read and Write waiting on the channel.
func (c *Channel) wakeLocked() {
	close(c.notify)
	c.notify = make(chan struct{})
}

// killLocked marks the channel closed or reset, dropping unread bytes
// unless keep is set.
func (c *Channel) killLocked(keep bool) {
	select {
	case <-c.dead:
	default:
		close(c.dead)
	}
	if !keep {
		c.buf, c.r = nil, 0
	}
	c.wakeLocked()
}

// Read reads received bytes. It returns io.EOF after the peer's CLOSE once
// everything before it was read, and the session's terminal error once the
// session ended and the buffer is empty. After a reset it returns a
// *ResetError, except that a RESET from a peer that had already sent CLOSE
// leaves the finished stream readable to its io.EOF: the peer aborts only
// what it had not finished.
func (c *Channel) Read(p []byte) (int, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return 0, net.ErrClosed
		}
		if c.resetLocal {
			err := c.resetErr
			c.mu.Unlock()
			return 0, err
		}
		if c.r < len(c.buf) {
			if len(p) == 0 {
				c.mu.Unlock()
				return 0, nil
			}
			n := copy(p, c.buf[c.r:])
			c.r += n
			if c.r == len(c.buf) {
				c.buf, c.r = c.buf[:0], 0
			}
			grant := c.consumedLocked(n)
			c.mu.Unlock()
			c.nRead.Add(int64(n))
			if grant > 0 {
				var inc [windowLen]byte
				putU32(inc[:], uint32(grant))
				c.s.queue(Frame{Type: FrameWindow, Channel: c.id, Payload: inc[:]})
			}
			return n, nil
		}
		if c.recvClosed {
			c.mu.Unlock()
			return 0, io.EOF
		}
		if c.resetErr != nil {
			err := c.resetErr
			c.mu.Unlock()
			return 0, err
		}
		wait := c.notify
		c.mu.Unlock()
		if err := c.s.Err(); err != nil {
			return 0, err
		}
		select {
		case <-wait:
		case <-c.s.done:
		case <-c.rd.wait():
			return 0, errTimeout
		}
	}
}

// consumedLocked accounts for n bytes read and returns the credit to grant
// the peer now, if any: grants are batched to a quarter of the window.
func (c *Channel) consumedLocked(n int) int {
	if c.recvClosed {
		return 0 // the peer sends no more
	}
	c.unacked += n
	if c.unacked < max(c.window/4, 1) {
		return 0
	}
	g := c.unacked
	c.unacked = 0
	c.recvAllowed += int64(g)
	return g
}

// Write writes p, in DATA frames of at most the peer's max payload, as
// credit allows. It returns ErrWriteClosed after CloseWrite, net.ErrClosed
// after Close, a *ResetError after a reset and the terminal error after the
// session ended. On an error, the bytes counted in n were sent.
func (c *Channel) Write(p []byte) (int, error) {
	select {
	case c.wsem <- struct{}{}:
	case <-c.dead:
		c.mu.Lock()
		err := c.writableLocked()
		c.mu.Unlock()
		return 0, err
	case <-c.s.done:
		return 0, c.s.Err()
	case <-c.wd.wait():
		return 0, errTimeout
	}
	defer func() { <-c.wsem }()
	total := 0
	for len(p) > 0 {
		n, err := c.takeCredit(len(p))
		if err != nil {
			return total, err
		}
		if err := c.s.writeData(c, p[:n], c.wd.wait()); err != nil {
			c.mu.Lock()
			c.credit += int64(n) // not sent
			c.mu.Unlock()
			return total, err
		}
		c.nWrite.Add(int64(n))
		total += n
		p = p[n:]
	}
	return total, nil
}

// takeCredit waits until the peer lets us send and takes up to want bytes
// of credit, at most one frame's worth.
func (c *Channel) takeCredit(want int) (int, error) {
	for {
		c.mu.Lock()
		if err := c.writableLocked(); err != nil {
			c.mu.Unlock()
			return 0, err
		}
		if c.credit > 0 {
			n := int(min(int64(want), c.credit, int64(c.s.params.peerMaxPayload)))
			c.credit -= int64(n)
			c.mu.Unlock()
			return n, nil
		}
		wait := c.notify
		c.mu.Unlock()
		select {
		case <-wait:
		case <-c.s.done:
		case <-c.wd.wait():
			return 0, errTimeout
		}
	}
}

// writableLocked returns why the channel cannot send, or nil.
func (c *Channel) writableLocked() error {
	switch {
	case c.closed:
		return net.ErrClosed
	case c.resetErr != nil:
		return c.resetErr
	case c.sentClose:
		return ErrWriteClosed
	}
	return c.s.Err()
}

// CloseWrite half-closes the channel: the peer reads io.EOF after the bytes
// already written. Reading goes on until the peer closes its side.
func (c *Channel) CloseWrite() error {
	c.mu.Lock()
	if err := c.writableLocked(); err != nil {
		c.mu.Unlock()
		return err
	}
	c.sentClose = true
	done := c.recvClosed
	c.wakeLocked()
	c.mu.Unlock()
	c.s.queue(Frame{Type: FrameClose, Channel: c.id})
	if done {
		c.s.remove(c)
	}
	return nil
}

// Close closes the channel. If the peer has sent CLOSE, the channel ends
// cleanly (a CLOSE goes out if CloseWrite was not called); otherwise the
// peer may still be sending, and Close resets the channel so that the peer's
// writes fail instead of waiting for credit that would never come.
func (c *Channel) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	var f *Frame
	switch {
	case c.resetErr != nil:
	case !c.recvClosed:
		c.resetErr = &ResetError{Channel: c.name, Code: ResetCancel, Reason: "closed"}
		c.resetLocal = true
		f = &Frame{Type: FrameReset, Channel: c.id, Payload: codePayload(uint32(ResetCancel), "closed before the end of the stream")}
	case !c.sentClose:
		c.sentClose = true
		f = &Frame{Type: FrameClose, Channel: c.id}
	}
	c.killLocked(false)
	c.mu.Unlock()
	c.s.remove(c)
	if f != nil {
		c.s.queue(*f)
	}
	c.rd.set(time.Time{})
	c.wd.set(time.Time{})
	return nil
}

// Reset aborts the channel, telling the peer code and reason: Read and Write
// here return a *ResetError from then on, and so does the peer's Write. The
// peer's Read also fails, unless this side had already called CloseWrite:
// then the peer still reads the finished stream to its io.EOF.
func (c *Channel) Reset(code ResetCode, reason string) {
	c.mu.Lock()
	if c.resetErr != nil || c.closed {
		c.mu.Unlock()
		return
	}
	c.resetErr = &ResetError{Channel: c.name, Code: code, Reason: reason}
	c.resetLocal = true
	c.killLocked(false)
	c.mu.Unlock()
	c.s.remove(c)
	c.s.queue(Frame{Type: FrameReset, Channel: c.id, Payload: codePayload(uint32(code), reason)})
}

// deliver appends a DATA payload from the peer (on the reader goroutine).
func (c *Channel) deliver(p []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.recvClosed {
		return fmt.Errorf("%w: DATA on channel %d after its CLOSE", ErrProtocol, c.id)
	}
	if int64(len(p)) > c.recvAllowed {
		return fmt.Errorf("%w: window overflow on channel %d: %d bytes sent, %d allowed", ErrProtocol, c.id, len(p), c.recvAllowed)
	}
	c.recvAllowed -= int64(len(p))
	if c.closed || c.resetErr != nil || len(p) == 0 {
		return nil
	}
	if len(c.buf)+len(p) > cap(c.buf) {
		// Make room: compact, or grow (never past the window, which bounds
		// unread+len(p) because recvAllowed does).
		unread := c.buf[c.r:]
		need := len(unread) + len(p)
		if need <= cap(c.buf) {
			c.buf = c.buf[:copy(c.buf, unread)]
		} else {
			nb := make([]byte, len(unread), min(max(need, 2*cap(c.buf), 4<<10), c.window))
			copy(nb, unread)
			c.buf = nb
		}
		c.r = 0
	}
	c.buf = append(c.buf, p...)
	c.maxBuffered = max(c.maxBuffered, len(c.buf)-c.r)
	c.wakeLocked()
	return nil
}

// addCredit applies a WINDOW from the peer. Honest credit never exceeds the
// window the peer announced.
func (c *Channel) addCredit(inc int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.credit+inc > int64(c.s.params.peerWindow) {
		return fmt.Errorf("%w: window overflow on channel %d: credit %d + %d exceeds the window of %d", ErrProtocol, c.id, c.credit, inc, c.s.params.peerWindow)
	}
	c.credit += inc
	c.wakeLocked()
	return nil
}

// peerClosed applies the peer's CLOSE.
func (c *Channel) peerClosed() error {
	c.mu.Lock()
	if c.recvClosed {
		c.mu.Unlock()
		return fmt.Errorf("%w: second CLOSE on channel %d", ErrProtocol, c.id)
	}
	c.recvClosed = true
	done := c.sentClose
	c.wakeLocked()
	c.mu.Unlock()
	if done {
		c.s.remove(c)
	}
	return nil
}

// peerReset applies the peer's RESET: unread bytes are dropped, unless the
// peer had sent CLOSE: then its finished stream stays readable.
func (c *Channel) peerReset(code ResetCode, reason string) {
	c.mu.Lock()
	if c.resetErr == nil {
		c.resetErr = &ResetError{Channel: c.name, Code: code, Reason: reason, Remote: true}
	}
	c.killLocked(c.recvClosed && !c.closed)
	c.mu.Unlock()
	c.s.remove(c)
}

// LocalAddr and RemoteAddr are the session's transport addresses.
func (c *Channel) LocalAddr() net.Addr  { return c.s.LocalAddr() }
func (c *Channel) RemoteAddr() net.Addr { return c.s.RemoteAddr() }

// SetDeadline sets both the read and the write deadline.
func (c *Channel) SetDeadline(t time.Time) error {
	c.rd.set(t)
	c.wd.set(t)
	return nil
}

// SetReadDeadline bounds waiting in Read; the zero time removes the bound.
func (c *Channel) SetReadDeadline(t time.Time) error { c.rd.set(t); return nil }

// SetWriteDeadline bounds waiting in Write; the zero time removes the bound.
func (c *Channel) SetWriteDeadline(t time.Time) error { c.wd.set(t); return nil }

var _ net.Conn = (*Channel)(nil)

// deadline is a settable point in time whose channel is closed once it
// passes.
type deadline struct {
	mu    sync.Mutex
	timer *time.Timer
	c     chan struct{}
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.c == nil {
		d.c = make(chan struct{})
	}
	if d.timer != nil {
		if !d.timer.Stop() {
			<-d.c // the timer fired: its func closes d.c
		}
		d.timer = nil
	}
	expired := isClosed(d.c)
	if t.IsZero() {
		if expired {
			d.c = make(chan struct{})
		}
		return
	}
	dur := time.Until(t)
	if dur <= 0 {
		if !expired {
			close(d.c)
		}
		return
	}
	if expired {
		d.c = make(chan struct{})
	}
	c := d.c
	d.timer = time.AfterFunc(dur, func() { close(c) })
}

func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.c == nil {
		d.c = make(chan struct{})
	}
	return d.c
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func putU32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
}
