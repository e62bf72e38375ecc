package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// freshConn sends each request on a connection of its own, like httperf
// with --num-calls 1: dial, write, read the reply, close, all in the
// request's goroutine. http.Transport with DisableKeepAlives does the same
// through a dial goroutine and a reader and a writer goroutine for each
// connection; at 3000 req/s on this project's 2-core machine those
// hand-offs added about half a millisecond to every request (measured once,
// against a server that answers after 2 ms: a mean of 3.9 ms through the
// Transport where httperf counted 3.4 ms and this path 3.3 to 3.5 ms), so
// this path does without them. TestAgainstHttperf is the comparison that
// remains.
//
// The request asks for Connection: close and waits for the server's FIN
// before closing, so that the TIME_WAIT state stays with the server. A
// client that closes first keeps every port it used for a minute: at 3000
// connections a second its ~28,000 ephemeral ports would run out in ten
// seconds (loopback aside, where Linux reuses them).
type freshConn struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	addr string
	req  []byte // the request, rendered once
}

func newFreshConn(c Config, u *url.URL) (*freshConn, error) {
	req, err := http.NewRequest(http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, &ConfigError{"URL", err.Error()}
	}
	req.Header.Set("User-Agent", userAgent)
	req.Close = true
	var b bytes.Buffer
	if err := req.Write(&b); err != nil {
		return nil, &ConfigError{"URL", err.Error()}
	}
	f := &freshConn{dial: c.Dial, addr: hostPort(u), req: b.Bytes()}
	if f.dial == nil {
		f.dial = (&net.Dialer{}).DialContext
	}
	return f, nil
}

// finWait is how long a request waits, after the last byte of its reply,
// for the server to close first.
const finWait = 50 * time.Millisecond

var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}

// exchange does q's request on a new connection; ctx bounds all of it.
func (f *freshConn) exchange(ctx context.Context, q *Request, sent time.Time) {
	conn, err := f.dial(ctx, "tcp", f.addr)
	if err != nil {
		q.Outcome = failure(ctx, err)
		return
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	if _, err := conn.Write(f.req); err != nil {
		q.Outcome = failure(ctx, err)
		return
	}
	br := readers.Get().(*bufio.Reader)
	br.Reset(conn)
	defer func() { br.Reset(nil); readers.Put(br) }()
	resp, err := http.ReadResponse(br, nil)
	record(ctx, q, sent, resp, err)
	if q.Outcome != OutcomeOK && q.Outcome != OutcomeHTTPError {
		return
	}
	// Let the server close first (see freshConn); what it says is ignored.
	if t := time.Now().Add(finWait); t.Before(deadline) {
		conn.SetReadDeadline(t)
	}
	br.ReadByte()
}
