package qmptest_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmigrate/vmigrate/internal/leakcheck"
	"github.com/vmigrate/vmigrate/qmp"
	"github.com/vmigrate/vmigrate/qmp/qmptest"
)

var qemu72 = qmptest.Version{Major: 7, Minor: 2, Micro: 22, Package: "Debian 1:7.2+dfsg-7+deb12u18+b3"}

func dial(t *testing.T, f *qmptest.Fake) *qmp.Client {
	t.Helper()
	conn := qmptest.ServeFake(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := qmp.NewClient(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestFakeAnswersWithHandler(t *testing.T) {
	leakcheck.Check(t)
	f := qmptest.NewFake(qemu72, func(cmd string, args json.RawMessage) (any, error) {
		switch cmd {
		case "query-status":
			return qmp.StatusInfo{Status: "running", Running: true}, nil
		case "migrate-incoming":
			return nil, &qmptest.Error{Class: qmp.ClassGenericError, Desc: "Failed to bind socket: Address already in use"}
		case "cont":
			return nil, errors.New("plain error")
		case "stop":
			return nil, nil
		}
		return nil, &qmptest.Error{Class: qmp.ClassCommandNotFound, Desc: "The command " + cmd + " has not been found"}
	})
	c := dial(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	if v := c.Version(); v != (qmp.Version{Major: 7, Minor: 2, Micro: 22, Package: qemu72.Package}) {
		t.Errorf("version %+v", v)
	}
	st, err := c.QueryStatus(ctx)
	if err != nil || st != (qmp.StatusInfo{Status: "running", Running: true}) {
		t.Errorf("query-status = %+v, %v", st, err)
	}
	if err := c.Stop(ctx); err != nil { // a nil ret is {}
		t.Errorf("stop: %v", err)
	}
	for _, tc := range []struct {
		err         error
		class, desc string
	}{
		{c.MigrateIncoming(ctx, "unix:/x"), qmp.ClassGenericError, "Failed to bind socket: Address already in use"},
		{c.Cont(ctx), qmp.ClassGenericError, "plain error"},
		{c.Execute(ctx, "no-such-command", nil, nil), qmp.ClassCommandNotFound, "The command no-such-command has not been found"},
	} {
		var qe *qmp.Error
		if !errors.As(tc.err, &qe) || qe.Class != tc.class || qe.Desc != tc.desc {
			t.Errorf("err = %v, want class %s desc %q", tc.err, tc.class, tc.desc)
		}
	}
	// A second qmp_capabilities is refused, as QEMU does, and is no protocol error.
	var qe *qmp.Error
	if err := c.Execute(ctx, "qmp_capabilities", nil, nil); !errors.As(err, &qe) || qe.Class != qmp.ClassCommandNotFound {
		t.Errorf("second qmp_capabilities: %v", err)
	}

	want := []qmptest.Command{
		{Name: "qmp_capabilities"},
		{Name: "query-status"},
		{Name: "stop"},
		{Name: "migrate-incoming", Args: json.RawMessage(`{"uri":"unix:/x"}`)},
		{Name: "cont"},
		{Name: "no-such-command"},
		{Name: "qmp_capabilities"},
	}
	if got := f.Commands(); !reflect.DeepEqual(got, want) {
		t.Errorf("commands\n got %s\nwant %s", got, want)
	}
}

// Events sent from the Handler precede its reply on the wire; events sent
// from another goroutine arrive between replies.
func TestFakeEvents(t *testing.T) {
	leakcheck.Check(t)
	var f *qmptest.Fake
	f = qmptest.NewFake(qemu72, func(cmd string, args json.RawMessage) (any, error) {
		if cmd == "stop" {
			f.Event(qmp.EventStop, nil)
		}
		return nil, nil
	})
	client, server, err := qmptest.SocketPair()
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- f.Serve(context.Background(), server) }()
	defer func() {
		client.Close()
		if err := <-errc; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	r := bufio.NewReader(client)
	lines := func(n int) []string {
		t.Helper()
		var out []string
		for range n {
			l, err := r.ReadString('\n')
			if err != nil || !strings.HasSuffix(l, "\r\n") {
				t.Fatalf("read %q: %v", l, err)
			}
			out = append(out, l)
		}
		return out
	}
	if g := lines(1)[0]; !strings.HasPrefix(g, `{"QMP":{"version":{"qemu":{"micro":22,"minor":2,"major":7}`) {
		t.Errorf("greeting %s", g)
	}
	io.WriteString(client, `{"execute":"qmp_capabilities","id":"a"}`+"\n")
	if l := lines(1)[0]; l != `{"return":{},"id":"a"}`+"\r\n" {
		t.Errorf("capabilities reply %q", l)
	}
	io.WriteString(client, `{"execute":"stop","id":7}`+"\n")
	got := lines(2)
	if !strings.Contains(got[0], `"event":"STOP"`) || !strings.Contains(got[0], `"timestamp":{"seconds":`) || strings.Contains(got[0], `"data"`) {
		t.Errorf("first line after stop %q, want the STOP event without data", got[0])
	}
	if got[1] != `{"return":{},"id":7}`+"\r\n" {
		t.Errorf("second line after stop %q, want the reply", got[1])
	}
	f.Event(qmp.EventMigration, qmp.MigrationEvent{Status: "setup"})
	if l := lines(1)[0]; !strings.Contains(l, `"event":"MIGRATION","data":{"status":"setup"}`) {
		t.Errorf("event %q", l)
	}
}

// The Fake reports a client that breaks QMP, and answers it as QEMU would.
func TestFakeReportsProtocolErrors(t *testing.T) {
	leakcheck.Check(t)
	for _, tc := range []struct {
		name, send, reply, err string
	}{
		{"before-negotiation", `{"execute":"query-status","id":1}`,
			`{"error":{"class":"CommandNotFound","desc":"Expecting capabilities negotiation with 'qmp_capabilities'"},"id":1}`,
			"query-status before qmp_capabilities"},
		{"not-json", `hello`, `{"error":{"class":"GenericError","desc":"JSON parse error"}}`, "client sent"},
		{"no-execute", `{"id":2}`, `{"error":{"class":"GenericError","desc":"QMP input lacks member 'execute'"},"id":2}`, `without "execute"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := qmptest.NewFake(qemu72, func(string, json.RawMessage) (any, error) { return nil, nil })
			client, server, err := qmptest.SocketPair()
			if err != nil {
				t.Fatal(err)
			}
			errc := make(chan error, 1)
			go func() { errc <- f.Serve(context.Background(), server) }()
			r := bufio.NewReader(client)
			r.ReadString('\n')
			io.WriteString(client, tc.send+"\n")
			if l, _ := r.ReadString('\n'); l != tc.reply+"\r\n" {
				t.Errorf("reply %q, want %q", l, tc.reply)
			}
			client.Close()
			if err := <-errc; err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Serve = %v, want an error about %q", err, tc.err)
			}
		})
	}
}

// Close hangs up like a QEMU that exits: the client's calls fail with
// qmp.ErrClosed, and later events and Serve calls go nowhere.
func TestFakeClose(t *testing.T) {
	leakcheck.Check(t)
	f := qmptest.NewFake(qemu72, func(string, json.RawMessage) (any, error) { return nil, nil })
	c := dial(t, f)
	f.Close()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("client did not see the hang-up")
	}
	if err := c.Stop(context.Background()); !errors.Is(err, qmp.ErrClosed) {
		t.Errorf("stop after Close: %v", err)
	}
	f.Event(qmp.EventStop, nil) // dropped
	a, b := net.Pipe()
	defer a.Close()
	if err := f.Serve(context.Background(), b); err != nil {
		t.Errorf("Serve after Close = %v", err)
	}
	if _, err := a.Write([]byte("x")); err == nil {
		t.Error("Serve after Close left its connection open")
	}
}
