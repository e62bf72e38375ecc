package qmptest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"syscall"
	"testing"
	"time"
)

// Peer replays a transcript as the server side of a connection.
type Peer struct {
	conn   net.Conn
	script Transcript
	ids    map[string]json.RawMessage // recorded request id -> client's id
}

// NewPeer returns a Peer that will replay script on conn.
func NewPeer(conn net.Conn, script Transcript) *Peer {
	return &Peer{conn: conn, script: script, ids: make(map[string]json.RawMessage)}
}

// Run replays the script and then waits for the client to close. It returns
// nil if the client sent exactly the recorded lines, and otherwise an error
// naming the first difference. Run closes the connection before returning;
// ctx ending closes it early.
func (p *Peer) Run(ctx context.Context) error {
	defer p.conn.Close()
	stop := context.AfterFunc(ctx, func() { p.conn.Close() })
	defer stop()

	br := bufio.NewReader(p.conn)
	for i, e := range p.script {
		switch {
		case e.Dir == ServerToClient && e.EOF:
			return nil
		case e.Dir == ServerToClient:
			out := []byte(e.Raw)
			if e.Line != nil {
				out = append(p.withClientID(e.Line), '\r', '\n')
			}
			if _, err := p.conn.Write(out); err != nil {
				return fmt.Errorf("qmptest: entry %d: send: %w", i+1, err)
			}
		case e.Dir == ClientToServer:
			got, err := br.ReadBytes('\n')
			if err != nil {
				return fmt.Errorf("qmptest: entry %d: client sent no line (%v), transcript expects %s", i+1, err, e.Line)
			}
			got = bytes.TrimRight(got, "\r\n")
			if err := p.match(got, e.Line); err != nil {
				return fmt.Errorf("qmptest: entry %d: %w", i+1, err)
			}
		}
	}
	extra, err := br.ReadBytes('\n')
	if len(extra) > 0 {
		return fmt.Errorf("qmptest: client sent %q after the end of the transcript", extra)
	}
	if err != nil && !errors.Is(err, io.EOF) && ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("qmptest: after the transcript: %w", err)
	}
	return nil
}

// match compares a client line with the recorded one, ignoring "id", and
// remembers the client's id for the reply.
func (p *Peer) match(got, want json.RawMessage) error {
	g, gid, err := canonical(got)
	if err != nil {
		return fmt.Errorf("client sent %q: %w", got, err)
	}
	w, wid, err := canonical(want)
	if err != nil {
		return fmt.Errorf("transcript line %s: %w", want, err)
	}
	if !reflect.DeepEqual(g, w) {
		return fmt.Errorf("client sent %s, transcript has %s", got, want)
	}
	if wid != nil && gid != nil {
		p.ids[string(wid)] = gid
	}
	return nil
}

// canonical decodes a JSON line for comparison and splits off its "id".
func canonical(line []byte) (v any, id json.RawMessage, err error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, nil, err
	}
	if m, ok := v.(map[string]any); ok {
		if raw, ok := m["id"]; ok {
			id, _ = json.Marshal(raw)
			delete(m, "id")
		}
	}
	return v, id, nil
}

// withClientID returns a recorded server line with its "id" replaced by the
// id the client used in the matching request, if there was one.
func (p *Peer) withClientID(line json.RawMessage) []byte {
	var m map[string]json.RawMessage
	if json.Unmarshal(line, &m) != nil || m["id"] == nil {
		return append([]byte(nil), line...)
	}
	_, key, err := canonical([]byte(`{"id":` + string(m["id"]) + `}`))
	cid, ok := p.ids[string(key)]
	if err != nil || !ok || bytes.Equal(cid, key) {
		return append([]byte(nil), line...) // keep QEMU's bytes when the ids agree
	}
	m["id"] = cid
	out, err := json.Marshal(m)
	if err != nil {
		return append([]byte(nil), line...)
	}
	return out
}

// SocketPair returns the two ends of a connected, kernel-buffered Unix
// stream socket (unlike net.Pipe, writes do not wait for a reader).
func SocketPair() (client, server net.Conn, err error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("qmptest: socketpair: %w", err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), fmt.Sprintf("socketpair-%d", i))
		conns[i], err = net.FileConn(f)
		f.Close()
		if err != nil {
			if i == 1 {
				conns[0].Close()
			} else {
				syscall.Close(fds[1])
			}
			return nil, nil, fmt.Errorf("qmptest: socketpair: %w", err)
		}
	}
	return conns[0], conns[1], nil
}

// Serve starts a Peer replaying script and returns the client end of its
// connection. When the test ends, Serve waits for the Peer (closing the
// connection after a few seconds if the client never does) and reports its
// error as a test failure. Close the client before the test ends.
func Serve(tb testing.TB, script Transcript) net.Conn {
	tb.Helper()
	client, server, err := SocketPair()
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- NewPeer(server, script).Run(ctx) }()
	tb.Cleanup(func() {
		defer cancel()
		select {
		case err := <-errc:
			if err != nil {
				tb.Errorf("transcript replay: %v", err)
			}
		case <-time.After(5 * time.Second):
			cancel()
			client.Close()
			tb.Errorf("transcript replay: client did not close the connection; peer: %v", <-errc)
		}
	})
	return client
}
