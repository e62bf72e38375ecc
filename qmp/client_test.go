package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmigrate/vmigrate/internal/leakcheck"
	"github.com/vmigrate/vmigrate/qmp/qmptest"
)

const greeting = `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "test"}, "capabilities": ["oob"]}}`

// fakeQEMU is the server end of a connection, driven by the test line by line.
type fakeQEMU struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

type request struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments"`
	ID        json.RawMessage `json:"id"`
	raw       string
}

// send writes raw bytes to the client.
func (f *fakeQEMU) send(s string) {
	if _, err := io.WriteString(f.conn, s); err != nil {
		f.t.Errorf("fake QEMU: send: %v", err)
	}
}

// read reads one request from the client.
func (f *fakeQEMU) read() request {
	line, err := f.br.ReadString('\n')
	if err != nil {
		f.t.Errorf("fake QEMU: read: %v", err)
		return request{}
	}
	var r request
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		f.t.Errorf("fake QEMU: bad request %q: %v", line, err)
	}
	r.raw = line
	return r
}

func (f *fakeQEMU) reply(r request, ret string) string {
	return fmt.Sprintf(`{"return": %s, "id": %s}`+"\r\n", ret, r.ID)
}

func event(name, data string) string {
	return fmt.Sprintf(`{"timestamp": {"seconds": 1700000000, "microseconds": 5}, "event": %q, "data": %s}`+"\r\n", name, data)
}

// newFake returns a negotiated Client and the fake QEMU behind it.
func newFake(t *testing.T) (*Client, *fakeQEMU) {
	t.Helper()
	cc, sc, err := qmptest.SocketPair()
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeQEMU{t: t, conn: sc, br: bufio.NewReader(sc)}
	t.Cleanup(func() { sc.Close() })
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.send(greeting + "\r\n")
		r := f.read()
		if r.Execute != "qmp_capabilities" {
			t.Errorf("first command %q, want qmp_capabilities", r.Execute)
		}
		f.send(f.reply(r, "{}"))
	}()
	c, err := NewClient(testCtx(t), cc)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, f
}

func TestVersionAndArgs(t *testing.T) {
	leakcheck.Check(t)
	c, f := newFake(t)
	if v := c.Version(); v != (Version{7, 2, 22, "test"}) || v.String() != "7.2.22" || !v.AtLeast(7, 2) || v.AtLeast(7, 3) {
		t.Errorf("Version() = %+v", v)
	}
	go func() {
		r := f.read()
		if strings.Contains(r.raw, "arguments") {
			t.Errorf("nil args sent arguments: %s", r.raw)
		}
		f.send(f.reply(r, `{"status": "running", "singlestep": false, "running": true}`))
		r = f.read()
		if string(r.Arguments) != `{"max-bandwidth":1000,"multifd-channels":4}` {
			t.Errorf("migrate-set-parameters arguments = %s", r.Arguments)
		}
		f.send(f.reply(r, `{}`))
	}()
	ctx := testCtx(t)
	if s, err := c.QueryStatus(ctx); err != nil || s != (StatusInfo{"running", true}) {
		t.Errorf("QueryStatus = %+v, %v", s, err)
	}
	four := 4
	if err := c.MigrateSetParameters(ctx, MigrationParameters{MaxBandwidth: u64(1000), MultifdChannels: &four}); err != nil {
		t.Error(err)
	}
}

func TestErrorClassPreserved(t *testing.T) {
	c, f := newFake(t)
	go func() {
		r := f.read()
		f.send(fmt.Sprintf(`{"id": %s, "error": {"class": "DeviceNotFound", "desc": "Device 'nope' not found"}}`+"\r\n", r.ID))
	}()
	err := c.Execute(testCtx(t), "device_del", map[string]string{"id": "nope"}, nil)
	var qe *Error
	if !errors.As(err, &qe) {
		t.Fatalf("err = %v (%T), want *Error", err, err)
	}
	if *qe != (Error{"device_del", ClassDeviceNotFound, "Device 'nope' not found"}) {
		t.Errorf("Error = %+v", *qe)
	}
	if got := err.Error(); got != "qmp device_del: DeviceNotFound: Device 'nope' not found" {
		t.Errorf("Error() = %q", got)
	}
	if errors.Is(err, ErrClosed) || c.Err() != nil {
		t.Errorf("an error reply must not close the client: %v", c.Err())
	}
}

func TestCancelPendingCall(t *testing.T) {
	leakcheck.Check(t)
	c, f := newFake(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	got := make(chan request, 1)
	go func() { got <- f.read() }()
	err := c.Execute(ctx, "query-status", nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	// The late reply is discarded; the next call gets its own reply.
	late := <-got
	go func() {
		f.send(f.reply(late, `{"status": "late", "running": false}`))
		r := f.read()
		f.send(f.reply(r, `{"status": "running", "running": true}`))
	}()
	s, err := c.QueryStatus(testCtx(t))
	if err != nil || s.Status != "running" {
		t.Errorf("QueryStatus after a cancelled call = %+v, %v", s, err)
	}
	c.mu.Lock()
	n := len(c.pending)
	c.mu.Unlock()
	if n != 0 {
		t.Errorf("%d pending calls left", n)
	}
}

func TestConnectionDropFailsPending(t *testing.T) {
	leakcheck.Check(t)
	c, f := newFake(t)
	const n = 8
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- c.Execute(testCtx(t), fmt.Sprintf("cmd-%d", i), nil, nil)
		}()
	}
	for i := 0; i < n; i++ {
		f.read()
	}
	f.conn.Close()
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, ErrClosed) || !errors.Is(err, io.EOF) {
			t.Errorf("pending call: %v, want ErrClosed wrapping io.EOF", err)
		}
	}
	if err := c.Stop(testCtx(t)); !errors.Is(err, ErrClosed) || !errors.Is(err, io.EOF) {
		t.Errorf("call after drop: %v", err)
	}
	var cur Cursor
	if _, err := c.NextEvent(testCtx(t), &cur); !errors.Is(err, ErrClosed) {
		t.Errorf("NextEvent after drop: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close after drop: %v", err)
	}
}

func TestCloseFailsPendingAndLaterCalls(t *testing.T) {
	leakcheck.Check(t)
	c, f := newFake(t)
	go f.read()
	errc := make(chan error, 1)
	go func() { errc <- c.Cont(testCtx(t)) }()
	var cur Cursor
	evc := make(chan error, 1)
	go func() { _, err := c.NextEvent(testCtx(t), &cur); evc <- err }()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("pending call after Close: %v", err)
	}
	if err := <-evc; !errors.Is(err, ErrClosed) {
		t.Errorf("NextEvent after Close: %v", err)
	}
	if err := c.Quit(testCtx(t)); !errors.Is(err, ErrClosed) {
		t.Errorf("Quit after Close = %v, want ErrClosed", err)
	}
}

// QEMU sends a command's events around its reply, often in one write: STOP
// before the reply to "stop", MIGRATION "setup" before the reply to
// "migrate". A cursor taken before the command must see them either way.
func TestEventInSameBurstAsReply(t *testing.T) {
	for _, order := range []string{"event-then-reply", "reply-then-event"} {
		t.Run(order, func(t *testing.T) {
			leakcheck.Check(t)
			c, f := newFake(t)
			go func() {
				r := f.read()
				ev, rep := event(EventStop, "{}"), f.reply(r, "{}")
				if order == "event-then-reply" {
					f.send(ev + rep)
				} else {
					f.send(rep + ev)
				}
			}()
			cur := c.Cursor()
			if err := c.Stop(testCtx(t)); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			ev, err := c.WaitEvent(ctx, &cur, func(ev Event) bool { return ev.Name == EventStop })
			if err != nil {
				t.Fatal(err)
			}
			if ev.Seq != 1 || cur != 1 || !ev.Time.Equal(time.Unix(1700000000, 5000)) {
				t.Errorf("event %+v, cursor %d", ev, cur)
			}
		})
	}
}

func TestEventHistoryOverflow(t *testing.T) {
	leakcheck.Check(t)
	c, f := newFake(t)
	const total = MaxEventHistory + 100
	var b strings.Builder
	for i := 1; i <= total; i++ {
		b.WriteString(event(EventMigrationPass, fmt.Sprintf(`{"pass": %d}`, i)))
	}
	go f.send(b.String())
	for deadline := time.Now().Add(5 * time.Second); c.Cursor() < total; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d events read", c.Cursor())
		}
	}
	var cur Cursor
	_, err := c.NextEvent(testCtx(t), &cur)
	if !errors.Is(err, ErrEventsLost) {
		t.Fatalf("NextEvent from 0 = %v, want ErrEventsLost", err)
	}
	if cur != 100 {
		t.Errorf("cursor after loss = %d, want 100", cur)
	}
	ev, err := c.NextEvent(testCtx(t), &cur)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := ev.MigrationPass(); err != nil || ev.Seq != 101 || p.Pass != 101 {
		t.Errorf("first kept event = %+v (%v), pass %d", ev, err, p.Pass)
	}
	if _, err := ev.Migration(); err == nil {
		t.Error("Migration() on a MIGRATION_PASS event did not fail")
	}
	// WaitEvent does not skip the gap silently either.
	cur = 5
	if _, err := c.WaitEvent(testCtx(t), &cur, nil); !errors.Is(err, ErrEventsLost) {
		t.Errorf("WaitEvent over a gap = %v", err)
	}
}

func TestEventsBufferedBeforeDropAreDelivered(t *testing.T) {
	c, f := newFake(t)
	f.send(event(EventMigration, `{"status": "failed"}`))
	f.conn.Close()
	<-c.Done()
	var cur Cursor
	ev, err := c.NextEvent(testCtx(t), &cur)
	if m, merr := ev.Migration(); err != nil || merr != nil || m.Status != MigrationStatusFailed {
		t.Errorf("NextEvent = %+v, %v, %v", ev, err, merr)
	}
	if _, err := c.NextEvent(testCtx(t), &cur); !errors.Is(err, io.EOF) {
		t.Errorf("NextEvent after the last event = %v, want the terminal error", err)
	}
}

func TestNextEventCtx(t *testing.T) {
	leakcheck.Check(t)
	c, _ := newFake(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	cur := c.Cursor()
	if _, err := c.NextEvent(ctx, &cur); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("NextEvent = %v, want DeadlineExceeded", err)
	}
}

func TestOutOfOrderReplies(t *testing.T) {
	leakcheck.Check(t)
	c, f := newFake(t)
	go func() {
		a, b := f.read(), f.read()
		f.send(f.reply(b, fmt.Sprintf(`{"status": %q}`, b.Execute)) + f.reply(a, fmt.Sprintf(`{"status": %q}`, a.Execute)))
	}()
	var wg sync.WaitGroup
	for _, cmd := range []string{"one", "two"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var s StatusInfo
			if err := c.Execute(testCtx(t), cmd, nil, &s); err != nil || s.Status != cmd {
				t.Errorf("%s: got %+v, %v", cmd, s, err)
			}
		}()
	}
	wg.Wait()
}

// Lines that break QMP end the connection with an ErrProtocol; a reply for
// an id nobody waits for is ignored.
func TestProtocolErrorsAreTerminal(t *testing.T) {
	for _, tc := range []struct {
		name, send string
		terminal   bool
	}{
		{"truncated-json", `{"return": {}, "id": ` + "\r\n", true},
		{"not-an-object", `[1, 2, 3]` + "\r\n", true},
		{"neither-reply-nor-event", `{"hello": 1}` + "\r\n", true},
		{"reply-without-id", `{"return": {}}` + "\r\n", true},
		{"overlong-line", strings.Repeat("x", MaxLineBytes+200<<10), true},
		{"unknown-id", `{"return": {}, "id": "someone-else"}` + "\r\n" + `{"return": {}, "id": 999}` + "\r\n", false},
		{"blank-lines", "\r\n  \n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakcheck.Check(t)
			c, f := newFake(t)
			go io.WriteString(f.conn, tc.send) // fails once the client hangs up
			if !tc.terminal {
				go func() { r := f.read(); f.send(f.reply(r, "{}")) }()
				if err := c.Cont(testCtx(t)); err != nil {
					t.Errorf("after %s: %v", tc.name, err)
				}
				return
			}
			select {
			case <-c.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("client did not fail")
			}
			if err := c.Cont(testCtx(t)); !errors.Is(err, ErrClosed) || !errors.Is(err, ErrProtocol) {
				t.Errorf("call after %s: %v, want ErrClosed wrapping ErrProtocol", tc.name, err)
			}
		})
	}
}

func TestQuit(t *testing.T) {
	t.Run("closed-before-reply", func(t *testing.T) {
		leakcheck.Check(t)
		c, f := newFake(t)
		go func() { f.read(); f.conn.Close() }()
		if err := c.Quit(testCtx(t)); err != nil {
			t.Errorf("Quit = %v, want nil when QEMU closes before replying", err)
		}
	})
	t.Run("error-reply", func(t *testing.T) {
		c, f := newFake(t)
		go func() {
			r := f.read()
			f.send(fmt.Sprintf(`{"id": %s, "error": {"class": "GenericError", "desc": "no"}}`+"\r\n", r.ID))
		}()
		var qe *Error
		if err := c.Quit(testCtx(t)); !errors.As(err, &qe) {
			t.Errorf("Quit = %v, want *Error", err)
		}
	})
}

// notQMP connects NewClient to a peer that behaves as script says.
func TestNotQMP(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script func(net.Conn)
	}{
		{"silent", func(c net.Conn) { io.Copy(io.Discard, c) }},
		{"ssh-banner", func(c net.Conn) { io.WriteString(c, "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"); io.Copy(io.Discard, c) }},
		{"json-without-QMP", func(c net.Conn) { io.WriteString(c, `{"hello": "world"}`+"\n"); io.Copy(io.Discard, c) }},
		{"event-first", func(c net.Conn) { io.WriteString(c, event(EventStop, "{}")); io.Copy(io.Discard, c) }},
		{"closes", func(c net.Conn) { c.Close() }},
		{"binary", func(c net.Conn) { c.Write([]byte{0, 1, 2, 0xff, '\n'}); io.Copy(io.Discard, c) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakcheck.Check(t)
			cc, sc, err := qmptest.SocketPair()
			if err != nil {
				t.Fatal(err)
			}
			defer sc.Close()
			peerDone := make(chan struct{})
			go func() { defer close(peerDone); tc.script(sc) }()
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			c, err := NewClient(ctx, cc)
			if !errors.Is(err, ErrNotQMP) || !strings.Contains(err.Error(), "not a QMP monitor") || c != nil {
				t.Fatalf("NewClient = %v, %v; want ErrNotQMP", c, err)
			}
			if tc.name == "silent" && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("silent peer: %v, want DeadlineExceeded too", err)
			}
			<-peerDone // the peer's read ends because NewClient closed the conn
		})
	}
}

func TestDialHTTPServerIsNotQMP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	addr := "tcp:" + strings.TrimPrefix(srv.URL, "http://")
	_, err := Dial(ctx, addr)
	if !errors.Is(err, ErrNotQMP) || !strings.Contains(err.Error(), addr) {
		t.Errorf("Dial(%s) = %v, want ErrNotQMP naming the address", addr, err)
	}
}

func TestDialMissingSocket(t *testing.T) {
	dir := shortTempDir(t)
	path := filepath.Join(dir, "missing.qmp")
	for _, addr := range []string{path, "unix:" + path} {
		_, err := Dial(testCtx(t), addr)
		if err == nil || !strings.Contains(err.Error(), path) || !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Dial(%s) = %v, want an ENOENT error naming the path", addr, err)
		}
		var opErr *net.OpError
		if !errors.As(err, &opErr) {
			t.Errorf("Dial(%s) does not wrap the *net.OpError: %v", addr, err)
		}
	}
}

func TestDialUnixSocket(t *testing.T) {
	leakcheck.Check(t)
	dir := shortTempDir(t)
	path := filepath.Join(dir, "vm.qmp")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		f := &fakeQEMU{t: t, conn: conn, br: bufio.NewReader(conn)}
		f.send(greeting + "\r\n")
		f.send(f.reply(f.read(), "{}"))
		io.Copy(io.Discard, conn)
	}()
	c, err := Dial(testCtx(t), path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Version().Minor != 2 {
		t.Errorf("version %+v", c.Version())
	}
	c.Close()
	_ = os.Remove(path)
}
