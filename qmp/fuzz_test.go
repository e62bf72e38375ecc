package qmp

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmigrate/vmigrate/qmp/qmptest"
)

// FuzzClientRead feeds arbitrary server bytes to a Client: the greeting,
// replies and events it reads, then EOF. Whatever the bytes, the client must
// not panic, must settle within its deadline (handshake fails, or the call
// ends and the event stream reports the terminal error), and must number the
// events it keeps without gaps. Seeds are the server side of every recorded
// transcript; the client's ids count from 1 as in the recordings, so seeded
// replies reach their callers.
func FuzzClientRead(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.jsonl"))
	for _, name := range files {
		tr, err := qmptest.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(tr.ServerBytes())
	}
	f.Add([]byte(greeting + "\r\n" + `{"return": {}, "id": 1}` + "\r\n" + `{"return": {"status": "running", "running": true}, "id": 2}` + "\n"))
	f.Add([]byte(greeting + "\n{\"return\": {}, \"id\": 1}\n{\"event\": \"STOP\", \"timestamp\": {\"seconds\": -1, \"microseconds\": -1}}\n"))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))

	f.Fuzz(func(t *testing.T, data []byte) {
		cc, sc, err := qmptest.SocketPair()
		if err != nil {
			t.Fatal(err)
		}
		peerDone := make(chan struct{})
		go func() {
			defer close(peerDone)
			defer sc.Close()
			sc.Write(data)
			sc.(*net.UnixConn).CloseWrite()
			io.Copy(io.Discard, sc)
		}()
		defer func() { <-peerDone }()

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := NewClient(ctx, cc)
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("handshake did not settle on EOF: %v", err)
			}
			return
		}
		defer c.Close()
		var s StatusInfo
		if err := c.Execute(ctx, "query-status", nil, &s); ctx.Err() != nil {
			t.Fatalf("query-status did not settle on EOF: %v", err)
		}
		var cur Cursor
		for {
			ev, err := c.NextEvent(ctx, &cur)
			if ctx.Err() != nil {
				t.Fatalf("event stream did not end after EOF: %v", err)
			}
			if errors.Is(err, ErrEventsLost) {
				continue
			}
			if err != nil {
				if !errors.Is(err, ErrClosed) {
					t.Fatalf("event stream ended with %v, want ErrClosed", err)
				}
				break
			}
			if ev.Seq != uint64(cur) || ev.Name == "" {
				t.Fatalf("event %+v at cursor %d", ev, cur)
			}
			ev.Migration()
			ev.MigrationPass()
		}
	})
}
