package loadgen

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/url"
	"time"
)

// Defaults and limits of Config.
const (
	DefaultTimeout = time.Second
	DefaultConns   = 64
	// MaxRequests bounds Rate×Duration: every request is recorded, in 40
	// bytes, so this is 400 MB (55 minutes at 3000 req/s).
	MaxRequests = 10_000_000
)

// Config says what to load and how hard.
type Config struct {
	URL      string        // http://host:port/path
	Rate     float64       // requests per second, > 0
	Duration time.Duration // how long to send: requests are due in [0, Duration)
	// Timeout is how long a request may take from being sent to the last
	// byte of its body (default DefaultTimeout); past it it is a timeout.
	Timeout time.Duration
	// Conns is the most keep-alive connections to the server (default
	// DefaultConns). Unused with NewConnPerRequest, where the number of
	// connections is that of requests in flight.
	Conns int
	// MaxOutstanding is the most requests in flight. A request due when
	// that many are in flight is not sent and counts as OutcomeOverload.
	// The default, Rate×Timeout plus 10% (at least 1), lets a server that
	// answers nothing time every request out without overloads, although
	// each timeout ends a little after its deadline.
	MaxOutstanding int
	// Dial opens connections; nil is a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// NewConnPerRequest opens a fresh TCP connection for every request
	// (httperf's default, --num-calls 1) instead of keeping connections
	// alive.
	NewConnPerRequest bool
}

// ConfigError is a Config that Run refuses; nothing was sent.
type ConfigError struct {
	Field  string // the Config field, e.g. "Rate"
	Reason string
}

func (e *ConfigError) Error() string { return "loadgen: " + e.Field + ": " + e.Reason }

// normalize checks c, fills in the defaults and parses the URL.
func (c Config) normalize() (Config, *url.URL, error) {
	u, err := url.Parse(c.URL)
	switch {
	case c.URL == "":
		return c, nil, &ConfigError{"URL", "empty"}
	case err != nil:
		return c, nil, &ConfigError{"URL", err.Error()}
	case u.Scheme != "http":
		return c, nil, &ConfigError{"URL", fmt.Sprintf("%q: want http://HOST[:PORT]/PATH", c.URL)}
	case u.Host == "":
		return c, nil, &ConfigError{"URL", fmt.Sprintf("%q: no host", c.URL)}
	}
	if !(c.Rate > 0) || math.IsInf(c.Rate, 0) {
		return c, nil, &ConfigError{"Rate", fmt.Sprintf("%v requests per second: want > 0", c.Rate)}
	}
	if c.Duration <= 0 {
		return c, nil, &ConfigError{"Duration", fmt.Sprintf("%v: want > 0", c.Duration)}
	}
	if c.Timeout < 0 {
		return c, nil, &ConfigError{"Timeout", fmt.Sprintf("%v: want > 0 (0 for the default)", c.Timeout)}
	}
	if c.Conns < 0 {
		return c, nil, &ConfigError{"Conns", fmt.Sprintf("%d: want > 0 (0 for the default)", c.Conns)}
	}
	if c.MaxOutstanding < 0 {
		return c, nil, &ConfigError{"MaxOutstanding", fmt.Sprintf("%d: want > 0 (0 for the default)", c.MaxOutstanding)}
	}
	if n := c.Rate * c.Duration.Seconds(); n > MaxRequests {
		return c, nil, &ConfigError{"Rate", fmt.Sprintf("%v req/s for %v is %.0f requests, more than %d", c.Rate, c.Duration, n, MaxRequests)}
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Conns == 0 {
		c.Conns = DefaultConns
	}
	if c.MaxOutstanding == 0 {
		c.MaxOutstanding = int(min(math.Ceil(c.Rate*c.Timeout.Seconds()*11/10), MaxRequests))
		c.MaxOutstanding = max(c.MaxOutstanding, 1)
	}
	return c, u, nil
}

// dueAt is when request i is due, from the start.
func dueAt(i int, rate float64) time.Duration {
	return time.Duration(math.Round(float64(i) * float64(time.Second) / rate))
}

// requestCount is the number of requests due in [0, d) at rate.
func requestCount(rate float64, d time.Duration) int {
	n := int(math.Ceil(rate * d.Seconds()))
	for n > 0 && dueAt(n-1, rate) >= d {
		n--
	}
	for dueAt(n, rate) < d {
		n++
	}
	return n
}
