package qmp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmigrate/vmigrate/internal/sockaddr"
)

// Local reports whether the monitor is a unix socket, so its QEMU runs
// on this host: the connection closing then means the process went away.
func (c *Client) Local() bool {
	_, ok := c.conn.(*net.UnixConn)
	return ok
}

// Version is QEMU's version from the QMP greeting.
type Version struct {
	Major, Minor, Micro int
	Package             string // distribution build string, e.g. "Debian 1:7.2+dfsg-7+deb12u18"
}

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro) }

// AtLeast reports whether v is major.minor or newer.
func (v Version) AtLeast(major, minor int) bool {
	return v.Major > major || (v.Major == major && v.Minor >= minor)
}

// Client is a QMP connection in command mode. Its methods are safe for
// concurrent use.
type Client struct {
	conn       net.Conn
	version    Version
	nextID     atomic.Uint64
	writeSem   chan struct{} // holds one token while a request is being written
	greeted    chan struct{} // closed by the reader after the greeting
	readerDone chan struct{} // closed when the reader goroutine returns

	mu      sync.Mutex
	pending map[uint64]chan reply
	err     error         // terminal error; set once, then done is closed
	cause   error         // what caused err; nil after Close
	done    chan struct{} // closed when err is set

	// Event history, guarded by mu. events holds Seq lastSeq-len+1..lastSeq.
	events     []Event
	eventBytes int
	lastSeq    uint64
	evNotify   chan struct{} // closed and replaced on each new event
}

type reply struct {
	ret json.RawMessage
	err *wireError
}

// Dial connects to the QMP monitor at addr and negotiates command mode, all
// bounded by ctx. addr is "unix:/path", "tcp:HOST:PORT", a socket path
// ("/path", "./sock", or any addr without a colon) or "HOST:PORT".
func Dial(ctx context.Context, addr string) (*Client, error) {
	network, address := sockaddr.Split(addr)
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("qmp: connect to %s: %w", addr, err)
	}
	c, err := handshake(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", addr, err)
	}
	return c, nil
}

// NewClient reads the QMP greeting from conn and negotiates command mode, all
// bounded by ctx. The Client owns conn from then on, also when NewClient
// fails (it closes conn). If the peer sends no greeting before ctx ends, or
// sends anything else, the error wraps ErrNotQMP.
func NewClient(ctx context.Context, conn net.Conn) (*Client, error) {
	c, err := handshake(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("qmp: %w", err)
	}
	return c, nil
}

func handshake(ctx context.Context, conn net.Conn) (*Client, error) {
	c := &Client{
		conn:       conn,
		writeSem:   make(chan struct{}, 1),
		greeted:    make(chan struct{}),
		readerDone: make(chan struct{}),
		pending:    make(map[uint64]chan reply),
		done:       make(chan struct{}),
		evNotify:   make(chan struct{}),
	}
	go c.readLoop()
	select {
	case <-c.greeted:
	case <-c.done:
		<-c.readerDone
		return nil, fmt.Errorf("%w: no greeting: %w", ErrNotQMP, c.cause)
	case <-ctx.Done():
		c.shutdown(nil)
		// Silence is also what a busy monitor looks like: QEMU greets a
		// second client on one QMP socket only after the first leaves.
		return nil, fmt.Errorf("%w (or a monitor busy with another client: QEMU serves one at a time): no greeting: %w", ErrNotQMP, ctx.Err())
	}
	if err := c.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		c.shutdown(nil)
		return nil, fmt.Errorf("negotiate capabilities: %w", err)
	}
	return c, nil
}

// Version returns QEMU's version from the greeting.
func (c *Client) Version() Version { return c.version }

// Close closes the connection and waits for the reader goroutine to exit.
// Pending and later calls fail with ErrClosed.
func (c *Client) Close() error {
	c.shutdown(nil)
	return nil
}

// Done is closed when the client has its terminal error: after Close or
// when the connection failed.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns the terminal error, or nil while the client is usable.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// droppedByPeer reports whether the terminal error came from the connection
// ending, rather than from Close or from a protocol error.
func (c *Client) droppedByPeer() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err != nil && c.cause != nil && !errors.Is(c.cause, ErrProtocol)
}

// shutdown sets the terminal error (the first one wins), closes the
// connection and waits for the reader. It must not be called by the reader.
func (c *Client) shutdown(cause error) {
	c.fail(cause)
	<-c.readerDone
}

// fail sets the terminal error from cause if none is set, wakes every waiter
// and closes the connection, which ends the reader. A nil cause is Close.
func (c *Client) fail(cause error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.cause = cause
	c.err = ErrClosed
	if cause != nil {
		c.err = fmt.Errorf("%w: %w", ErrClosed, cause)
	}
	c.pending = nil
	close(c.done)
	c.mu.Unlock()
	c.conn.Close()
}

// readLoop is the client's only reader. It exits when the connection fails
// or is closed, after setting the terminal error.
func (c *Client) readLoop() {
	defer close(c.readerDone)
	lr := newLineReader(c.conn, MaxLineBytes)
	greeted := false
	for {
		line, err := lr.next()
		if err != nil {
			c.fail(err)
			return
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		m, err := parseMessage(line)
		if err == nil && !greeted {
			if m.QMP == nil {
				err = fmt.Errorf("%w: first message has no \"QMP\" key: %.64q", ErrProtocol, line)
			} else {
				v := m.QMP.Version
				c.version = Version{Major: v.QEMU.Major, Minor: v.QEMU.Minor, Micro: v.QEMU.Micro, Package: v.Package}
				greeted = true
				close(c.greeted)
				continue
			}
		}
		if err == nil {
			err = c.dispatch(m, line)
		}
		if err != nil {
			c.fail(err)
			return
		}
	}
}

// dispatch routes one message after the greeting.
func (c *Client) dispatch(m wireMessage, line []byte) error {
	switch {
	case m.Event != "":
		c.addEvent(m.Event, m.Data, m.Timestamp.time())
		return nil
	case m.Return != nil || m.Error != nil:
		if m.ID == nil {
			return fmt.Errorf("%w: reply without id: %.64q", ErrProtocol, line)
		}
		var id uint64
		if json.Unmarshal(m.ID, &id) != nil {
			return nil // not an id we sent; nobody waits for it
		}
		c.mu.Lock()
		ch, ok := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if ok {
			ch <- reply{ret: m.Return, err: m.Error} // buffered; never blocks
		}
		return nil
	default:
		return fmt.Errorf("%w: message is neither reply nor event: %.64q", ErrProtocol, line)
	}
}

// Execute runs a QMP command. args, if not nil, is marshalled as the
// command's "arguments"; the reply's "return" is unmarshalled into result
// unless result is nil. A QMP error reply is returned as *Error. If ctx ends
// first, Execute returns an error wrapping ctx.Err() and the late reply is
// discarded.
func (c *Client) Execute(ctx context.Context, command string, args any, result any) error {
	_, err := c.execute(ctx, command, args, result)
	return err
}

// execute is Execute that also reports whether the request was written.
func (c *Client) execute(ctx context.Context, command string, args any, result any) (sent bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("qmp %s: %w", command, err)
	}
	id := c.nextID.Add(1)
	line, err := json.Marshal(wireRequest{Execute: command, Arguments: args, ID: id})
	if err != nil {
		return false, fmt.Errorf("qmp %s: encode arguments: %w", command, err)
	}
	line = append(line, '\n')

	ch := make(chan reply, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return false, fmt.Errorf("qmp %s: %w", command, err)
	}
	c.pending[id] = ch
	c.mu.Unlock()

	if err := c.write(ctx, line); err != nil {
		c.forget(id)
		return false, fmt.Errorf("qmp %s: %w", command, err)
	}

	var r reply
	select {
	case r = <-ch:
	case <-ctx.Done():
		c.forget(id)
		return true, fmt.Errorf("qmp %s: %w", command, ctx.Err())
	case <-c.done:
		select {
		case r = <-ch: // the reply was read just before the connection ended
		default:
			return true, fmt.Errorf("qmp %s: %w", command, c.Err())
		}
	}
	if r.err != nil {
		return true, &Error{Command: command, Class: r.err.Class, Desc: r.err.Desc}
	}
	if result != nil {
		if err := json.Unmarshal(r.ret, result); err != nil {
			return true, fmt.Errorf("qmp %s: decode reply: %w", command, err)
		}
	}
	return true, nil
}

func (c *Client) forget(id uint64) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// aLongTimeAgo is a deadline in the past, to interrupt a blocked Write.
var aLongTimeAgo = time.Unix(1, 0)

// write sends one request line. Writes are serialised; a write that fails or
// is interrupted by ctx may have sent part of a line, so it makes the
// connection's error terminal.
func (c *Client) write(ctx context.Context, line []byte) error {
	select {
	case c.writeSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return c.Err()
	}
	defer func() { <-c.writeSem }()

	interrupted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		c.conn.SetWriteDeadline(aLongTimeAgo)
		close(interrupted)
	})
	_, err := c.conn.Write(line)
	if !stop() {
		<-interrupted
		if err == nil {
			c.conn.SetWriteDeadline(time.Time{})
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			c.fail(fmt.Errorf("write interrupted: %w", ctx.Err()))
			return ctx.Err()
		}
		c.fail(fmt.Errorf("write: %w", err))
		return c.Err()
	}
	return nil
}
