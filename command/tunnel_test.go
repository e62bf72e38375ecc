package command

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// mainAsync runs vmigrate as its own process until the returned stop
// sends it SIGINT. A process, not Main in a goroutine: urfave/cli's help
// flag is one global that two apps running at once would share.
func mainAsync(t *testing.T, args ...string) (stop func() (int, string)) {
	t.Helper()
	cmd := exec.Command(testBinary(t), args...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	return func() (int, string) {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
			return cmd.ProcessState.ExitCode(), errb.String()
		case <-time.After(10 * time.Second):
			t.Fatalf("vmigrate %v did not stop", args)
			return -1, ""
		}
	}
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// testBinary builds vmigrate once per test run, into a directory anyone
// may read (the not-root test runs it as nobody).
func testBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "vmbin")
		if err != nil {
			binErr = err
			return
		}
		os.Chmod(dir, 0o755)
		binPath = filepath.Join(dir, "vmigrate")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/vmigrate/vmigrate").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
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
	echoServer(t, "unix", filepath.Join(dir, "echo"))
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
