package lab

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// A dial that would wait out SYN back-off gives up at the bound, even when
// the caller's context has no deadline (net/http's dials have none); one
// that succeeds is not touched.
func TestBoundDial(t *testing.T) {
	hang := func(ctx context.Context, network, addr string) (net.Conn, error) {
		<-ctx.Done() // a connect whose SYNs are lost
		return nil, ctx.Err()
	}
	start := time.Now()
	_, err := BoundDial(hang, 50*time.Millisecond)(context.Background(), "tcp", "10.0.0.1:80")
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Errorf("bounded hanging dial: %v after %v, want a deadline error after 50 ms", err, time.Since(start))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := BoundDial((&net.Dialer{}).DialContext, time.Second)(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("bounded dial to a listener: %v", err)
	}
	c.Close()
}
