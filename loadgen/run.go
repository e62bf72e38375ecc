package loadgen

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Run sends c's requests on their schedule and returns the record of every
// one. A bad Config is a *ConfigError and nothing is sent.
//
// When ctx is done Run sends nothing more, waits for the requests in flight
// (each ends within Timeout: they are not cut short, so that their records
// stay true) and returns the requests due until then, with ctx.Err().
// Otherwise the error is nil: failed requests are outcomes, not errors.
// Run's goroutines end before it returns; it closes its connections, whose
// goroutines in net/http end a moment later.
func Run(ctx context.Context, c Config) (*Result, error) {
	c, u, err := c.normalize()
	if err != nil {
		return nil, err
	}
	g := &generator{timeout: c.Timeout, parent: context.WithoutCancel(ctx)}
	if c.NewConnPerRequest {
		if g.fresh, err = newFreshConn(c, u); err != nil {
			return nil, err
		}
	} else {
		// The requests carry ctx's values but not its cancellation (see above).
		g.tmpl, err = http.NewRequestWithContext(g.parent, http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, &ConfigError{"URL", err.Error()}
		}
		g.tmpl.Header.Set("User-Agent", userAgent)
		g.tr = newTransport(c)
		defer g.tr.CloseIdleConnections()
	}
	return g.run(ctx, c)
}

const userAgent = "vmigrate-loadgen"

// newTransport is the keep-alive client: up to c.Conns connections.
//
// net/http lets a dial go on after the request that started it gave up,
// for a later request to use, and counts it against MaxConnsPerHost. A
// dial whose SYN was lost (a server migrating, a link down) waits out
// TCP's SYN back-off, up to two minutes: with every connection slot held
// by such dials, no request could get through after the server came back.
// Each dial is therefore bounded by the request timeout, as httperf's
// connection attempts are, and a new one, sending a SYN at once, takes
// the slot.
func newTransport(c Config) *http.Transport {
	dial := c.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	timeout := c.Timeout
	bounded := func(ctx context.Context, network, addr string) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return dial(ctx, network, addr)
	}
	return &http.Transport{
		Proxy:               nil, // the server itself, whatever $HTTP_PROXY says
		DialContext:         bounded,
		DisableCompression:  true, // Bytes are the bytes the server sent
		MaxIdleConns:        c.Conns,
		MaxIdleConnsPerHost: c.Conns,
		MaxConnsPerHost:     c.Conns,
	}
}

// generator is the state shared by the scheduler and the requests of a run.
// Requests go through tr (keep-alive) or fresh (a connection each).
type generator struct {
	timeout time.Duration
	parent  context.Context // Run's ctx without its cancellation
	start   time.Time

	tr    *http.Transport
	tmpl  *http.Request // every request is a shallow copy with its own ctx
	fresh *freshConn
}

// run is the scheduler: it sleeps until each request is due and starts a
// goroutine for it, which ends within Timeout; run waits for all of them.
func (g *generator) run(ctx context.Context, c Config) (*Result, error) {
	n := requestCount(c.Rate, c.Duration)
	res := &Result{Requests: make([]Request, n), End: c.Duration}
	var wg sync.WaitGroup
	var inflight atomic.Int64
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()

	g.start = time.Now()
	res.Start = g.start
	i := 0
	for ; i < n; i++ {
		due := dueAt(i, c.Rate)
		if wait := due - time.Since(g.start); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
			case <-timer.C:
			}
		}
		if ctx.Err() != nil {
			break
		}
		q := &res.Requests[i]
		q.Due = due
		if inflight.Load() >= int64(c.MaxOutstanding) {
			q.Sent = time.Since(g.start)
			q.Outcome = OutcomeOverload
			continue
		}
		inflight.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer inflight.Add(-1)
			g.do(q)
		}()
	}
	var err error
	if i < n {
		res.Requests = res.Requests[:i]
		res.End = dueAt(i, c.Rate)
		err = ctx.Err()
	}
	wg.Wait()
	return res, err
}

// do sends one request and records how it went in q.
func (g *generator) do(q *Request) {
	ctx, cancel := context.WithTimeout(g.parent, g.timeout)
	defer cancel()
	sent := time.Now()
	q.Sent = sent.Sub(g.start)
	if g.fresh != nil {
		g.fresh.exchange(ctx, q, sent)
		return
	}
	resp, err := g.tr.RoundTrip(g.tmpl.WithContext(ctx))
	record(ctx, q, sent, resp, err)
}

// record reads a reply to its end and records how the request went; resp
// and err are what sending it gave.
func record(ctx context.Context, q *Request, sent time.Time, resp *http.Response, err error) {
	if err != nil {
		q.Outcome = failure(ctx, err)
		return
	}
	q.Status = int32(resp.StatusCode)
	q.Bytes, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		q.Outcome = failure(ctx, err)
		return
	}
	q.Latency = time.Since(sent)
	q.Outcome = replied(resp.StatusCode)
}

// replied is the outcome of a reply read to its end.
func replied(status int) Outcome {
	if status >= 200 && status < 300 {
		return OutcomeOK
	}
	return OutcomeHTTPError
}

// failure is the outcome of a request whose exchange failed with err: a
// timeout if its deadline passed, else a connection error.
func failure(ctx context.Context, err error) Outcome {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return OutcomeTimeout
	}
	return OutcomeConnError
}

// hostPort is the address to dial for u.
func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
	}
	return net.JoinHostPort(u.Hostname(), port)
}
