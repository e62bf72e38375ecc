package loadgen

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// checkGoroutines fails t if, once t's other cleanups have run (servers
// closed), more goroutines remain than when it was called.
func checkGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() { settles(t, before) })
}

// settles fails t if the number of goroutines does not come down to n
// within 5 seconds.
func settles(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Errorf("%d goroutines left, want %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// server is an httptest server of h, closed when the test ends.
func server(t *testing.T, h http.HandlerFunc) *httptest.Server {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// modes runs f once keeping connections alive and once with a connection
// per request. Once f returns, so once Run has, the goroutines and
// connections of Run are gone, and so are the server's for them.
func modes(t *testing.T, f func(t *testing.T, newConn bool)) {
	for _, newConn := range []bool{false, true} {
		name := map[bool]string{false: "keep-alive", true: "new-conn"}[newConn]
		t.Run(name, func(t *testing.T) {
			defer settles(t, runtime.NumGoroutine())
			f(t, newConn)
		})
	}
}

func run(t *testing.T, c Config) *Result {
	t.Helper()
	res, err := Run(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if n := requestCount(c.Rate, c.Duration); len(res.Requests) != n {
		t.Fatalf("%d requests recorded, want %d", len(res.Requests), n)
	}
	for i, q := range res.Requests {
		if q.Outcome == 0 || q.Due != dueAt(i, c.Rate) || q.Sent < q.Due {
			t.Fatalf("request %d: %+v", i, q)
		}
	}
	return res
}

func within(got, want, tol float64) bool { return got >= want*(1-tol) && got <= want*(1+tol) }

// At 1000 req/s for 2 s against a fast server: 2000 requests, all ok, sent
// at 1000/s within 5%.
func TestRateAccuracy(t *testing.T) {
	if measuredWithoutRace(t) {
		return
	}
	checkGoroutines(t)
	srv := server(t, func(w http.ResponseWriter, r *http.Request) { w.Write(page) })
	modes(t, func(t *testing.T, newConn bool) {
		res := run(t, Config{URL: srv.URL + "/x", Rate: 1000, Duration: 2 * time.Second, NewConnPerRequest: newConn})
		s := res.Summary(0, 0)
		if s.Requests != 2000 || s.OK != 2000 {
			t.Errorf("%d requests, %d ok, errors %v; want 2000 ok", s.Requests, s.OK, s.Errors)
		}
		if !within(s.SendRate, 1000, 0.05) || !within(s.ReplyRate, 1000, 0.05) {
			t.Errorf("send rate %.1f, reply rate %.1f; want 1000 within 5%%", s.SendRate, s.ReplyRate)
		}
		var late time.Duration
		for _, q := range res.Requests {
			late = max(late, q.Sent-q.Due)
			if q.Status != 200 || q.Bytes != int64(len(page)) || q.Latency <= 0 {
				t.Fatalf("request %+v, want 200 with %d bytes", q, len(page))
			}
		}
		t.Logf("send rate %.1f/s, latest send %v after due, latency mean %.2f ms p99 %.2f ms", s.SendRate, late, s.MeanMS, s.P99MS)
	})
}

// Against a server that takes 300 ms, requests still go out at 200/s:
// the load is open loop, not held back by the replies.
func TestOpenLoop(t *testing.T) {
	if measuredWithoutRace(t) {
		return
	}
	checkGoroutines(t)
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond)
		w.Write(page)
	})
	modes(t, func(t *testing.T, newConn bool) {
		// 60 requests are in flight at a time; Conns leaves room for them.
		res := run(t, Config{URL: srv.URL, Rate: 200, Duration: time.Second, Conns: 100, NewConnPerRequest: newConn})
		s := res.Summary(0, 0)
		if s.OK != 200 {
			t.Errorf("%d of %d ok, errors %v", s.OK, s.Requests, s.Errors)
		}
		if !within(s.SendRate, 200, 0.05) {
			t.Errorf("send rate %.1f, want 200 within 5%%", s.SendRate)
		}
		if last := res.Requests[len(res.Requests)-1]; last.Sent > last.Due+50*time.Millisecond {
			t.Errorf("last request due %v sent %v", last.Due, last.Sent)
		}
		if s.MeanMS < 300 || s.MeanMS > 400 || s.P99MS > 450 {
			t.Errorf("latency mean %.1f ms, p99 %.1f; want about 300", s.MeanMS, s.P99MS)
		}
		t.Logf("send rate %.1f/s, latency mean %.1f ms p99 %.1f ms", s.SendRate, s.MeanMS, s.P99MS)
	})
}

// Requests the server never answers are timeouts; the others are ok; no
// goroutine is left behind.
func TestTimeouts(t *testing.T) {
	checkGoroutines(t)
	var n, hung atomic.Int64
	release := make(chan struct{})
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%4 == 0 {
			hung.Add(1)
			select {
			case <-r.Context().Done(): // the client gave up
			case <-release:
			}
			return
		}
		w.Write(page)
	})
	t.Cleanup(func() { close(release) }) // before srv.Close, which waits for handlers
	modes(t, func(t *testing.T, newConn bool) {
		n.Store(0)
		hung.Store(0)
		start := time.Now()
		res := run(t, Config{URL: srv.URL, Rate: 100, Duration: time.Second, Timeout: 200 * time.Millisecond, NewConnPerRequest: newConn})
		if d := time.Since(start); d > 1500*time.Millisecond {
			t.Errorf("Run took %v for 1 s of requests with a 200 ms timeout", d)
		}
		s := res.Summary(0, 0)
		if h := int(hung.Load()); h < 20 || s.Errors[OutcomeTimeout] != h || s.OK != 100-h || len(s.Errors) != 1 {
			t.Errorf("server hung %d of 100 requests; loadgen: %d ok, errors %v", h, s.OK, s.Errors)
		}
		for _, q := range res.Requests {
			if q.Outcome == OutcomeTimeout && (q.Latency != 0 || q.Status != 0) {
				t.Errorf("timeout recorded as %+v", q)
			}
		}
	})
}

// A server that refuses, hangs up or speaks something else than HTTP gives
// connection errors; one that answers 503 gives http-errors.
func TestFailures(t *testing.T) {
	checkGoroutines(t)
	refused := listener(t)
	refused.Close()
	hangUp := listener(t)
	go acceptAll(hangUp, func(c net.Conn) { c.Close() })
	garbage := listener(t)
	go acceptAll(garbage, func(c net.Conn) {
		c.Read(make([]byte, 1024))
		c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n\r\n"))
		c.Close()
	})
	unavailable := server(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "migrating", http.StatusServiceUnavailable)
	})
	for _, tt := range []struct {
		name string
		url  string
		want Outcome
	}{
		{"refused", "http://" + refused.Addr().String(), OutcomeConnError},
		{"hang-up", "http://" + hangUp.Addr().String(), OutcomeConnError},
		{"not-http", "http://" + garbage.Addr().String(), OutcomeConnError},
		{"503", unavailable.URL, OutcomeHTTPError},
	} {
		t.Run(tt.name, func(t *testing.T) {
			modes(t, func(t *testing.T, newConn bool) {
				res := run(t, Config{URL: tt.url, Rate: 50, Duration: 200 * time.Millisecond, Timeout: time.Second, NewConnPerRequest: newConn})
				for _, q := range res.Requests {
					if q.Outcome != tt.want {
						t.Fatalf("request %+v, want %v", q, tt.want)
					}
					if tt.want == OutcomeHTTPError && (q.Status != 503 || q.Bytes != int64(len("migrating\n")) || q.Latency <= 0) {
						t.Fatalf("503 recorded as %+v", q)
					}
				}
			})
		})
	}
}

func listener(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// acceptAll hands each connection to f until ln is closed.
func acceptAll(ln net.Listener, f func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go f(c)
	}
}

// With MaxOutstanding requests in flight, a request due is not sent and
// counts as an overload.
func TestOverload(t *testing.T) {
	checkGoroutines(t)
	var inflight, most atomic.Int64
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(200 * time.Millisecond)
		w.Write(page)
	})
	res := run(t, Config{URL: srv.URL, Rate: 50, Duration: time.Second, MaxOutstanding: 2})
	s := res.Summary(0, 0)
	// Two requests every 200 ms are sent: about 10 of 50.
	if s.OK+s.Errors[OutcomeOverload] != 50 || s.OK < 6 || s.OK > 14 || most.Load() > 2 {
		t.Errorf("%d ok, errors %v, at most %d in flight at the server; want about 10 ok, the rest overloads, at most 2 in flight",
			s.OK, s.Errors, most.Load())
	}
	for _, q := range res.Requests {
		if q.Outcome == OutcomeOverload && (q.Latency != 0 || q.Status != 0) {
			t.Errorf("overload recorded as %+v", q)
		}
	}
}

// Cancelling stops sending; Run returns what was due until then and the
// context's error.
func TestCancel(t *testing.T) {
	checkGoroutines(t)
	srv := server(t, func(w http.ResponseWriter, r *http.Request) { w.Write(page) })
	modes(t, func(t *testing.T, newConn bool) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		res, err := Run(ctx, Config{URL: srv.URL, Rate: 100, Duration: 10 * time.Second, NewConnPerRequest: newConn})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err %v, want the context's", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Run returned %v after the start, 300 ms after being cancelled", d)
		}
		n := len(res.Requests)
		if n < 20 || n > 40 || res.End != dueAt(n, 100) {
			t.Fatalf("%d requests, end %v; want about 30 and the due time of the first not sent", n, res.End)
		}
		if s := res.Summary(0, 0); s.OK != n {
			t.Errorf("%d of %d ok, errors %v", s.OK, n, s.Errors)
		}
	})
}

// Config.Dial makes every connection.
func TestDial(t *testing.T) {
	checkGoroutines(t)
	srv := server(t, func(w http.ResponseWriter, r *http.Request) { w.Write(page) })
	modes(t, func(t *testing.T, newConn bool) {
		var dials atomic.Int64
		var d net.Dialer
		dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return d.DialContext(ctx, network, srv.Listener.Addr().String())
		}
		// The host in the URL does not resolve: only Dial knows where to go.
		res := run(t, Config{URL: "http://guest.invalid:8080/", Rate: 100, Duration: 200 * time.Millisecond, Dial: dial, NewConnPerRequest: newConn})
		if s := res.Summary(0, 0); s.OK != 20 || dials.Load() == 0 || newConn && dials.Load() != 20 {
			t.Errorf("%d ok of 20 after %d dials", s.OK, dials.Load())
		}
	})
}

// Keeping connections alive, the load recovers when a server that stopped
// answering comes back: dials started during the outage, whose SYNs were
// lost, give up within the request timeout instead of holding every
// connection slot for TCP's SYN back-off (minutes). Here a dial during the
// outage hangs until its context ends, as a connect whose SYNs are lost
// does, and the outage also drops the kept-alive connections.
func TestRecoversAfterOutage(t *testing.T) {
	checkGoroutines(t)
	var down atomic.Bool
	release := make(chan struct{})
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			select { // a server that stopped: no answer
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		w.Write(page)
	})
	t.Cleanup(func() { close(release) })
	var d net.Dialer
	var hung atomic.Int64
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if down.Load() {
			hung.Add(1)
			<-ctx.Done() // the SYN and its retransmissions are lost
			return nil, ctx.Err()
		}
		return d.DialContext(ctx, network, addr)
	}
	const rate, timeout = 200, 200 * time.Millisecond
	go func() {
		time.Sleep(500 * time.Millisecond)
		down.Store(true)
		time.Sleep(500 * time.Millisecond)
		down.Store(false)
	}()
	res := run(t, Config{URL: srv.URL, Rate: rate, Duration: 2500 * time.Millisecond, Timeout: timeout, Conns: 4, Dial: dial})
	// A second after the outage ended (it ended at 1 s), every request
	// must be answered again.
	late := res.Summary(2*time.Second, 2500*time.Millisecond)
	if late.Requests == 0 || late.OK != late.Requests {
		t.Errorf("from 1 s after the outage: %d of %d requests ok, errors %v (%d dials hung during the outage)", late.OK, late.Requests, late.Errors, hung.Load())
	}
	if hung.Load() == 0 {
		t.Error("no dial was made during the outage: the test did not test recovery")
	}
}

// A bad Config is an error naming the field, and nothing is sent.
func TestBadConfig(t *testing.T) {
	var requests atomic.Int64
	srv := server(t, func(w http.ResponseWriter, r *http.Request) { requests.Add(1) })
	good := Config{URL: srv.URL, Rate: 10, Duration: time.Second}
	for _, tt := range []struct {
		field string
		edit  func(c *Config)
	}{
		{"URL", func(c *Config) { c.URL = "" }},
		{"URL", func(c *Config) { c.URL = "127.0.0.1:80/x" }},
		{"URL", func(c *Config) { c.URL = "https://" + srv.Listener.Addr().String() }},
		{"URL", func(c *Config) { c.URL = "http:///x" }},
		{"URL", func(c *Config) { c.URL = "http://[::1/x" }},
		{"Rate", func(c *Config) { c.Rate = 0 }},
		{"Rate", func(c *Config) { c.Rate = -5 }},
		{"Rate", func(c *Config) { c.Rate = float64Inf() }},
		{"Rate", func(c *Config) { c.Rate = 1e9; c.Duration = time.Hour }},
		{"Duration", func(c *Config) { c.Duration = -time.Second }},
		{"Duration", func(c *Config) { c.Duration = 0 }},
		{"Timeout", func(c *Config) { c.Timeout = -time.Second }},
		{"Conns", func(c *Config) { c.Conns = -1 }},
		{"MaxOutstanding", func(c *Config) { c.MaxOutstanding = -1 }},
	} {
		c := good
		tt.edit(&c)
		res, err := Run(context.Background(), c)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != tt.field || !strings.Contains(err.Error(), tt.field) || res != nil {
			t.Errorf("%+v: got %v, %v; want a ConfigError on %s", c, res, err, tt.field)
		}
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("%d requests sent with bad configs", n)
	}
}

func float64Inf() float64 { return 1 / zero }

var zero float64

func TestDefaults(t *testing.T) {
	for _, tt := range []struct {
		in       Config
		timeout  time.Duration
		conns    int
		outstand int
	}{
		{Config{Rate: 3000}, time.Second, 64, 3300},
		{Config{Rate: 0.5}, time.Second, 64, 1},
		{Config{Rate: 100, Timeout: 5 * time.Second, Conns: 8}, 5 * time.Second, 8, 550},
		{Config{Rate: 100, MaxOutstanding: 7}, time.Second, 64, 7},
	} {
		tt.in.URL, tt.in.Duration = "http://h/", time.Second
		c, u, err := tt.in.normalize()
		if err != nil || c.Timeout != tt.timeout || c.Conns != tt.conns || c.MaxOutstanding != tt.outstand || hostPort(u) != "h:80" {
			t.Errorf("%+v: %v, %d, %d, %s, %v; want %v, %d, %d", tt.in, c.Timeout, c.Conns, c.MaxOutstanding, hostPort(u), err, tt.timeout, tt.conns, tt.outstand)
		}
	}
}
