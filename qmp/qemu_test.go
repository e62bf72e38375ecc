package qmp

import (
	"bytes"
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

const qemuBinary = "qemu-system-x86_64"

// qemuArgs is the command line of a test VM: no guest kernel, no devices,
// 64 MiB of RAM. SeaBIOS runs and finds nothing to boot, which is enough
// guest to migrate.
func qemuArgs(qmpSock string, incoming bool) []string {
	args := []string{
		"-machine", "q35", "-accel", "tcg", "-m", "64M",
		"-nodefaults", "-no-user-config", "-display", "none",
		"-qmp", "unix:" + qmpSock + ",server=on,wait=off",
	}
	if incoming {
		args = append(args, "-incoming", "defer")
	}
	return args
}

func TestQEMUArgs(t *testing.T) {
	for _, tc := range []struct {
		sock     string
		incoming bool
		want     string
	}{
		{"/tmp/q/a.qmp", false, "-machine q35 -accel tcg -m 64M -nodefaults -no-user-config -display none -qmp unix:/tmp/q/a.qmp,server=on,wait=off"},
		{"/tmp/q/b.qmp", true, "-machine q35 -accel tcg -m 64M -nodefaults -no-user-config -display none -qmp unix:/tmp/q/b.qmp,server=on,wait=off -incoming defer"},
	} {
		if got := strings.Join(qemuArgs(tc.sock, tc.incoming), " "); got != tc.want {
			t.Errorf("qemuArgs(%q, %v) = %q, want %q", tc.sock, tc.incoming, got, tc.want)
		}
	}
}

// requireQEMU returns the path of qemu-system-x86_64. Without it the test
// is skipped, or fails if VMIGRATE_REQUIRE_QEMU=1.
func requireQEMU(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath(qemuBinary)
	if err != nil {
		if os.Getenv("VMIGRATE_REQUIRE_QEMU") == "1" {
			t.Fatalf("%s not found and VMIGRATE_REQUIRE_QEMU=1: %v", qemuBinary, err)
		}
		t.Skipf("%s not found (set VMIGRATE_REQUIRE_QEMU=1 to fail instead): %v", qemuBinary, err)
	}
	return path
}

// shortTempDir returns a fresh directory under /tmp whose path is short
// enough for Unix socket names (t.TempDir can exceed 108 bytes).
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "vmq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type testVM struct {
	Name   string
	Sock   string
	cmd    *exec.Cmd
	stderr *lockedBuffer
	exited chan struct{}
}

// startQEMU starts a VM whose QMP socket is dir/name.qmp and waits for the
// socket to appear. The VM is killed when the test ends or the test process
// dies; on failure its command line and stderr are logged.
func startQEMU(t *testing.T, bin, dir, name string, incoming bool) *testVM {
	t.Helper()
	vm := &testVM{
		Name:   name,
		Sock:   filepath.Join(dir, name+".qmp"),
		stderr: &lockedBuffer{},
		exited: make(chan struct{}),
	}
	vm.cmd = exec.Command(bin, qemuArgs(vm.Sock, incoming)...)
	vm.cmd.Stdout = vm.stderr
	vm.cmd.Stderr = vm.stderr
	vm.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := vm.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { vm.cmd.Wait(); close(vm.exited) }()
	t.Cleanup(func() {
		vm.cmd.Process.Kill()
		<-vm.exited
		if t.Failed() {
			t.Logf("VM %s: reproduce with: %s\nVM %s stderr (tail):\n%s", name, vm.cmd.String(), name, tail(vm.stderr.String(), 2000))
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The socket file exists from bind(); only a connection shows
		// QEMU listens.
		if c, err := net.Dial("unix", vm.Sock); err == nil {
			c.Close()
			return vm
		}
		select {
		case <-vm.exited:
			t.Fatalf("VM %s exited before creating %s: %v\n%s", name, vm.Sock, vm.cmd.ProcessState, vm.stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("VM %s: no QMP socket %s after 10s", name, vm.Sock)
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
