package qmptest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

// maxRequestBytes bounds one line the Fake reads from its client, as
// qmp.MaxLineBytes bounds the client's reads.
const maxRequestBytes = 16 << 20

// Error classes the Fake itself sends, from QEMU's qapi/error.json. They are
// spelled out here because the qmp package's tests import qmptest, so
// qmptest cannot import qmp.
const (
	classGenericError    = "GenericError"
	classCommandNotFound = "CommandNotFound"
)

// Handler answers one command. A nil error sends {"return": ret}, with
// {} for a nil ret; an error sends a QMP error reply: an *Error keeps its
// class, any other error is a GenericError with the error's text.
//
// The Fake calls its Handler from its one serving goroutine, one command at
// a time, and writes the reply when the Handler returns, so events the
// Handler sends with Fake.Event precede the reply, as QEMU sends STOP before
// it answers "stop". A Handler must not block for long: the Fake reads
// nothing while it runs.
type Handler func(cmd string, args json.RawMessage) (ret any, err error)

// Error is a QMP error reply a Handler wants sent.
type Error struct {
	Class string `json:"class"` // QMP's error class, e.g. "GenericError", "CommandNotFound"
	Desc  string `json:"desc"`
}

func (e *Error) Error() string { return e.Class + ": " + e.Desc }

// Version is the QEMU version a Fake announces in its greeting.
type Version struct {
	Major, Minor, Micro int
	Package             string
}

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro) }

// Command is one command a client sent: its name and its "arguments",
// nil if it sent none.
type Command struct {
	Name string
	Args json.RawMessage
}

// Fake is a QMP server whose answers come from a Handler. Where a Peer
// replays what one QEMU once said, a Fake lets a test model a QEMU that
// reacts: it greets with its Version, negotiates capabilities as QEMU does
// (refusing other commands before qmp_capabilities, and qmp_capabilities
// after), passes every later command to the Handler, and records every
// command it was sent. Event sends an event at any time, from the Handler or
// from any goroutine.
//
// A Fake serves one connection at a time, in Serve; ServeFake runs it for
// the length of a test.
type Fake struct {
	version Version
	handler Handler

	wmu sync.Mutex // serialises the lines written to conn

	mu       sync.Mutex
	conn     net.Conn      // while Serve runs
	done     chan struct{} // closed when that Serve returns
	closed   bool
	commands []Command
	err      error // the first protocol error of the client
}

// NewFake returns a Fake that will greet as QEMU v and answer with h. The
// Handler may refer to the Fake, for its Event method.
func NewFake(v Version, h Handler) *Fake {
	return &Fake{version: v, handler: h}
}

// Serve sends the greeting on conn and answers commands until the client
// closes the connection, ctx ends or Close is called; it closes conn before
// returning. It returns the first QMP protocol error the client made (a
// line that is not a JSON object, a request without "execute", a command
// before qmp_capabilities), nil if there was none. The Fake goes on serving
// after such an error, as QEMU does. After Close, Serve closes conn and
// returns nil at once.
func (f *Fake) Serve(ctx context.Context, conn net.Conn) error {
	defer conn.Close()
	done := make(chan struct{})
	defer close(done)
	f.mu.Lock()
	switch {
	case f.closed:
		f.mu.Unlock()
		return nil
	case f.conn != nil:
		f.mu.Unlock()
		return errors.New("qmptest: fake already serves a connection")
	}
	f.conn, f.done = conn, done
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.conn = nil
		f.mu.Unlock()
	}()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	f.write(conn, f.greeting())
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 0, 4096), maxRequestBytes)
	negotiated := false
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		f.answer(conn, sc.Bytes(), &negotiated)
	}
	if err := sc.Err(); errors.Is(err, bufio.ErrTooLong) {
		f.protocolError(fmt.Errorf("qmptest: client sent a line longer than %d bytes", maxRequestBytes))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// answer handles one line from the client.
func (f *Fake) answer(conn net.Conn, line []byte, negotiated *bool) {
	var req struct {
		Execute   *string         `json:"execute"`
		Arguments json.RawMessage `json:"arguments"`
		ID        json.RawMessage `json:"id"`
	}
	if err := json.Unmarshal(line, &req); err != nil {
		f.protocolError(fmt.Errorf("qmptest: client sent %.64q: %w", line, err))
		f.reply(conn, nil, nil, &Error{Class: classGenericError, Desc: "JSON parse error"})
		return
	}
	if req.Execute == nil {
		f.protocolError(fmt.Errorf("qmptest: client sent %.64q without \"execute\"", line))
		f.reply(conn, req.ID, nil, &Error{Class: classGenericError, Desc: "QMP input lacks member 'execute'"})
		return
	}
	cmd := *req.Execute
	f.mu.Lock()
	f.commands = append(f.commands, Command{Name: cmd, Args: append(json.RawMessage(nil), req.Arguments...)})
	f.mu.Unlock()

	switch {
	case !*negotiated && cmd == "qmp_capabilities":
		*negotiated = true
		f.reply(conn, req.ID, nil, nil)
	case !*negotiated:
		f.protocolError(fmt.Errorf("qmptest: client sent %s before qmp_capabilities", cmd))
		f.reply(conn, req.ID, nil, &Error{Class: classCommandNotFound, Desc: "Expecting capabilities negotiation with 'qmp_capabilities'"})
	case cmd == "qmp_capabilities":
		f.reply(conn, req.ID, nil, &Error{Class: classCommandNotFound, Desc: "Capabilities negotiation is already complete, command ignored"})
	default:
		ret, err := f.handler(cmd, req.Arguments)
		f.reply(conn, req.ID, ret, err)
	}
}

// reply writes a return or an error reply, echoing the client's id.
func (f *Fake) reply(conn net.Conn, id json.RawMessage, ret any, err error) {
	var msg struct {
		Return json.RawMessage `json:"return,omitempty"`
		Error  *Error          `json:"error,omitempty"`
		ID     json.RawMessage `json:"id,omitempty"`
	}
	msg.ID = id
	if qerr, ok := err.(*Error); ok && qerr == nil {
		err = nil // a nil *Error returned as an error
	}
	if err == nil {
		msg.Return = json.RawMessage(`{}`)
		if ret != nil {
			b, merr := json.Marshal(ret)
			if merr != nil {
				err = fmt.Errorf("qmptest: handler's return value: %w", merr)
				f.protocolError(err)
			}
			msg.Return = b
		}
	}
	if err != nil {
		msg.Return = nil
		var qerr *Error
		if !errors.As(err, &qerr) {
			qerr = &Error{Class: classGenericError, Desc: err.Error()}
		}
		msg.Error = qerr
	}
	b, _ := json.Marshal(msg) // a RawMessage from json.Marshal and strings: cannot fail
	f.write(conn, b)
}

// Event sends an event now, with QEMU's timestamp and, unless data is nil,
// data as its "data". It is safe to call from the Handler (the event then
// precedes the reply) and from any goroutine. Without a connection, or after
// the client left, the event is dropped.
func (f *Fake) Event(name string, data any) {
	now := time.Now()
	msg := struct {
		Timestamp struct {
			Seconds      int64 `json:"seconds"`
			Microseconds int64 `json:"microseconds"`
		} `json:"timestamp"`
		Event string `json:"event"`
		Data  any    `json:"data,omitempty"`
	}{Event: name, Data: data}
	msg.Timestamp.Seconds, msg.Timestamp.Microseconds = now.Unix(), int64(now.Nanosecond()/1000)
	b, err := json.Marshal(msg)
	if err != nil {
		f.protocolError(fmt.Errorf("qmptest: event %s: %w", name, err))
		return
	}
	f.mu.Lock()
	conn := f.conn
	f.mu.Unlock()
	if conn != nil {
		f.write(conn, b)
	}
}

// write sends one line. A failed write means the client has gone; what it
// missed is its business, so the error is dropped.
func (f *Fake) write(conn net.Conn, line []byte) {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	conn.Write(append(line, '\r', '\n'))
}

func (f *Fake) greeting() []byte {
	var g struct {
		QMP struct {
			Version struct {
				QEMU struct {
					Micro int `json:"micro"`
					Minor int `json:"minor"`
					Major int `json:"major"`
				} `json:"qemu"`
				Package string `json:"package"`
			} `json:"version"`
			Capabilities []string `json:"capabilities"`
		} `json:"QMP"`
	}
	v := &g.QMP.Version
	v.QEMU.Major, v.QEMU.Minor, v.QEMU.Micro, v.Package = f.version.Major, f.version.Minor, f.version.Micro, f.version.Package
	g.QMP.Capabilities = []string{"oob"}
	b, _ := json.Marshal(g)
	return b
}

func (f *Fake) protocolError(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

// Commands returns the commands received so far, qmp_capabilities
// included, in order.
func (f *Fake) Commands() []Command {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Command(nil), f.commands...)
}

// CommandNames returns the names of the commands received so far, in order.
func (f *Fake) CommandNames() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	names := make([]string, len(f.commands))
	for i, c := range f.commands {
		names[i] = c.Name
	}
	return names
}

// Close hangs up, as a QEMU that exits: it closes the connection being
// served, waits for Serve to return, and makes later Serve calls fail.
func (f *Fake) Close() error {
	f.mu.Lock()
	f.closed = true
	conn, done := f.conn, f.done
	f.mu.Unlock()
	if conn != nil {
		conn.Close()
		<-done
	}
	return nil
}

// ServeFake serves f on one end of a SocketPair and returns the other end,
// for qmp.NewClient. When the test ends, ServeFake closes f, waits for Serve
// and reports a protocol error of the client as a test failure. Close the
// client before the test ends (a t.Cleanup registered after ServeFake runs
// first).
func ServeFake(tb testing.TB, f *Fake) net.Conn {
	tb.Helper()
	client, server, err := SocketPair()
	if err != nil {
		tb.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- f.Serve(context.Background(), server) }() // ends when the client or Close hangs up
	tb.Cleanup(func() {
		f.Close()
		if err := <-errc; err != nil {
			tb.Errorf("qmptest fake: %v", err)
		}
	})
	return client
}
