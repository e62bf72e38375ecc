package command

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// echoServer answers every connection with what it reads, until the test
// ends.
func echoServer(t *testing.T, network, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln
}

// vmigrate wanlink relays through the emulated link: an echo's round trip
// takes the configured RTT, and the counts are printed on exit.
func TestWanlinkCommand(t *testing.T) {
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb bytes.Buffer
	done := make(chan int)
	go func() {
		done <- Main(ctx, []string{"vmigrate", "wanlink", "--listen", listen, "--forward", echo.Addr().String(), "--bandwidth", "10mbit", "--rtt", "80ms"}, &out, &errb)
	}()
	c := dialRetry(t, "tcp", listen)
	start := time.Now()
	c.Write([]byte("x"))
	buf := make([]byte, 1)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	if rtt := time.Since(start); rtt < 80*time.Millisecond || rtt > 300*time.Millisecond {
		t.Errorf("echo round trip %v through an 80 ms link", rtt)
	}
	c.Close()
	time.Sleep(100 * time.Millisecond)
	cancel()
	if code := <-done; code != ExitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "1 bytes forward, 1 bytes back") {
		t.Errorf("output %q", out.String())
	}
}

func TestWanlinkBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--listen", "127.0.0.1:0", "--forward", "127.0.0.1:1", "--bandwidth", "10bps"},
		{"--listen", "127.0.0.1:0", "--forward", "127.0.0.1:1", "--rtt", "-5ms"},
		{"--listen", "nowhere", "--forward", "127.0.0.1:1"},
		{"--listen", "127.0.0.1:0", "--forward", "unix:"},
		{"--listen", "127.0.0.1:0", "--forward", "tcp:localhost"},
		{"--listen", "127.0.0.1:0"},
	} {
		code, _, stderr := vmigrate(t, append([]string{"wanlink"}, args...)...)
		if code != ExitUsage || stderr == "" {
			t.Errorf("%v: exit %d, stderr %q", args, code, stderr)
		}
	}
}
