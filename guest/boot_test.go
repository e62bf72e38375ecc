package guest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmigrate/vmigrate/guest"
	"github.com/vmigrate/vmigrate/guest/agentapi"
	"github.com/vmigrate/vmigrate/guest/workload"
)

// qemuArgs is the command line of a TCG guest with user networking that
// forwards 127.0.0.1:hostPort to the agent.
func qemuArgs(img guest.Image, serialLog string, hostPort int, appendArgs string) []string {
	return []string{
		"-machine", "q35", "-accel", "tcg", "-m", "512M",
		"-nodefaults", "-display", "none",
		"-serial", "file:" + serialLog,
		"-kernel", img.Kernel, "-initrd", img.Initrd, "-append", appendArgs,
		"-netdev", fmt.Sprintf("user,id=n0,hostfwd=tcp:127.0.0.1:%d-:%d", hostPort, agentapi.Port),
		"-device", "virtio-net-pci,netdev=n0",
		"-no-reboot",
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func tail(b []byte, lines int) string {
	s := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(s[max(0, len(s)-lines):], "\n")
}

// TestBootGuest boots the image under TCG and checks the agent end to end. It
// skips when QEMU or the image cannot be had, unless VMIGRATE_REQUIRE_QEMU=1.
func TestBootGuest(t *testing.T) {
	unavailable := t.Skipf
	if os.Getenv("VMIGRATE_REQUIRE_QEMU") == "1" {
		unavailable = t.Fatalf
	} else if testing.Short() {
		t.Skip("boots a VM; skipped with -short")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		unavailable("qemu-system-x86_64 not installed: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	img, err := guest.Build(ctx, guest.BuildOptions{Log: testLog{t}})
	if err != nil {
		unavailable("guest image: %v", err)
	}

	const wss = 256 << 20
	port := freePort(t)
	serial := filepath.Join(t.TempDir(), "serial.log")
	args := qemuArgs(img, serial, port, guest.KernelArgs("10.0.2.15", 24, workload.Config{Name: workload.MemDirty, WSSBytes: wss}))
	cmd := exec.Command(qemu, args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // QEMU dies with the test
	t.Logf("reproduce: %s '%s'", qemu, strings.Join(args, "' '"))
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := os.ReadFile(serial)
			t.Logf("serial log tail:\n%s", tail(log, 40))
			t.Logf("qemu stderr:\n%s", tail(stderr.Bytes(), 20))
		}
	})
	start := time.Now()
	if err := cmd.Start(); err != nil {
		unavailable("start qemu: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})

	// Boot: wait for the ready line on the serial console.
	var ready string
	for ready == "" {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("qemu exited before the agent was ready: %v", err)
		case <-ctx.Done():
			t.Fatal("no ready line on the serial console")
		case <-time.After(50 * time.Millisecond):
		}
		log, _ := os.ReadFile(serial)
		for _, line := range strings.Split(string(log), "\n") {
			if strings.HasPrefix(line, agentapi.ReadyPrefix) {
				ready = strings.TrimSpace(line)
			}
		}
		if time.Since(start) > 90*time.Second {
			t.Fatal("no ready line on the serial console after 90s")
		}
	}
	bootTime := time.Since(start)
	t.Logf("boot: %q after %v", ready, bootTime.Round(time.Millisecond))
	if !strings.Contains(ready, "ip=10.0.2.15 ") {
		t.Errorf("ready line %q lacks the address", ready)
	}

	c := &guest.Client{HTTP: &http.Client{Timeout: 60 * time.Second}, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	page, err := c.Index(ctx)
	if err != nil || !bytes.Contains(page, []byte("<html")) {
		t.Fatalf("GET /: %v (%d bytes)", err, len(page))
	}
	if _, err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	// Populate, then let the dirtier run a few seconds.
	var st agentapi.Status
	for {
		if st, err = c.Status(ctx); err != nil {
			t.Fatal(err)
		}
		if st.Workload.Populated {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("working set not populated: %+v", st.Workload)
		}
		time.Sleep(200 * time.Millisecond)
	}
	populated := time.Since(start)
	time.Sleep(3 * time.Second)
	if st, err = c.Status(ctx); err != nil {
		t.Fatal(err)
	}
	w := st.Workload
	t.Logf("status: boot_id=%s uptime=%dms mem_total=%d populate=%dms (populated %v after qemu start) dirtied=%d achieved=%.0f/%.0f pages/s",
		st.BootID, st.UptimeMS, st.MemTotalBytes, w.PopulateMS, populated.Round(time.Millisecond), w.DirtiedTotal, w.AchievedPagesPerSec, w.TargetPagesPerSec)
	if st.BootID == "" || !strings.Contains(ready, st.BootID) {
		t.Errorf("boot id %q not in ready line %q", st.BootID, ready)
	}
	if w.Name != workload.MemDirty || w.WSSBytes != wss || !w.Running || w.DirtiedTotal == 0 || w.AchievedPagesPerSec <= 0 || w.TargetPagesPerSec != workload.DefaultPagesPerSec {
		t.Errorf("workload status %+v", w)
	}

	vr, err := c.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("verify: %+v", vr)
	if vr.PagesChecked != wss/workload.PageSize || vr.PagesWrong != 0 || vr.FirstWrong != -1 {
		t.Errorf("verify = %+v, want %d pages checked, none wrong", vr, wss/workload.PageSize)
	}

	// Switching to idle frees the working set; verify then has nothing to check.
	if _, err := c.SetWorkload(ctx, workload.Config{Name: workload.Idle}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Verify(ctx); !errors.Is(err, workload.ErrNotPopulated) {
		t.Errorf("verify while idle: %v, want ErrNotPopulated", err)
	}
}
