package command

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// mainAsync runs vmigrate in-process until the returned stop is called.
func mainAsync(t *testing.T, args ...string) (stop func() (int, string)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- Main(ctx, append([]string{"vmigrate"}, args...), &out, &errb) }()
	return func() (int, string) {
		cancel()
		select {
		case code := <-done:
			return code, errb.String()
		case <-time.After(10 * time.Second):
			t.Fatalf("vmigrate %v did not stop", args)
			return -1, ""
		}
	}
}

func dialRetry(t *testing.T, network, addr string) net.Conn {
	t.Helper()
	for i := 0; i < 200; i++ {
		if c, err := net.Dial(network, addr); err == nil {
			return c
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s %s", network, addr)
	return nil
}

// tunnel keygen, tunnel dest and tunnel source carry a stream end to end;
// a source with another key is refused.
func TestTunnelCommands(t *testing.T) {
	dir := t.TempDir()
	k1, k2 := filepath.Join(dir, "k1"), filepath.Join(dir, "k2")
	for _, k := range []string{k1, k2} {
		if code, _, stderr := vmigrate(t, "tunnel", "keygen", k); code != ExitOK {
			t.Fatalf("keygen: %s", stderr)
		}
	}
	if code, _, _ := vmigrate(t, "tunnel", "keygen", k1); code == ExitOK {
		t.Error("keygen overwrote an existing key")
	}
	echo, err := net.Listen("unix", filepath.Join(dir, "echo"))
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	tport := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	stopDest := mainAsync(t, "tunnel", "dest", "--listen", tport, "--forward", "unix:"+filepath.Join(dir, "echo"), "--psk-file", k1)
	dialRetry(t, "tcp", tport).Close()

	sock := filepath.Join(dir, "src.sock")
	stopSrc := mainAsync(t, "tunnel", "source", "--listen", "unix:"+sock, "--peer", tport, "--psk-file", k1)
	c := dialRetry(t, "unix", sock)
	msg := []byte("the VM's memory, page by page")
	c.Write(msg)
	got := make([]byte, len(msg))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo through the tunnel: %q, %v", got, err)
	}
	c.Close()
	if code, stderr := stopSrc(); code != ExitOK {
		t.Errorf("tunnel source exit %d: %s", code, stderr)
	}

	code, _, stderr := vmigrate(t, "tunnel", "source", "--listen", "unix:"+filepath.Join(dir, "other.sock"), "--peer", tport, "--psk-file", k2)
	if code == ExitOK || !strings.Contains(stderr, "authentication failed") {
		t.Errorf("source with the wrong key: exit %d, %s", code, stderr)
	}
	if code, stderr := stopDest(); code != ExitOK {
		t.Errorf("tunnel dest exit %d: %s", code, stderr)
	}
	if code, _, stderr := vmigrate(t, "tunnel", "dest", "--listen", tport, "--forward", "unix:/x"); code != ExitUsage || !strings.Contains(stderr, "--psk-file") {
		t.Errorf("dest without authentication: exit %d, %s", code, stderr)
	}
}

func TestTunnelWindowFlag(t *testing.T) {
	for _, w := range []string{"1", "2G", "lots"} {
		code, _, stderr := vmigrate(t, "tunnel", "dest", "--listen", "127.0.0.1:0", "--forward", "unix:/x", "--insecure", "--tunnel-window", w)
		if code != ExitUsage || !strings.Contains(stderr, "--tunnel-window") {
			t.Errorf("--tunnel-window %s: exit %d, %s", w, code, stderr)
		}
	}
}

// --insecure works only when asked for, and says what it gives up.
func TestTunnelInsecureWarns(t *testing.T) {
	stop := mainAsync(t, "tunnel", "dest", "--listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--forward", "unix:/x", "--insecure")
	time.Sleep(200 * time.Millisecond)
	code, stderr := stop()
	if code != ExitOK || !strings.Contains(stderr, "clear text") {
		t.Errorf("exit %d, stderr %q: want a warning about clear text", code, stderr)
	}
}
