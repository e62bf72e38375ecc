package lab_test

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmigrate/vmigrate/guest"
	"github.com/vmigrate/vmigrate/guest/workload"
	"github.com/vmigrate/vmigrate/lab"
	"github.com/vmigrate/vmigrate/lab/labtest"
)

func netnsExists(t *testing.T, name string) bool {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == name {
			return true
		}
	}
	return false
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// The lab comes up with the guest reachable from the bridge, and Down
// leaves no process, namespace or socket behind.
func TestUpDown(t *testing.T) {
	cfg := labtest.Config(t, 256<<20, workload.Config{Name: workload.Idle})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l, err := lab.Up(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Down()
	if !netnsExists(t, l.Netns.Name) {
		t.Fatalf("namespace %s missing while up", l.Netns.Name)
	}
	st, err := l.Guest.Status(ctx)
	if err != nil || st.BootID == "" {
		t.Fatalf("guest status: %+v, %v", st, err)
	}
	if l.Accel.Accel != cfg.Accel {
		t.Errorf("accel %q, asked for %q", l.Accel.Accel, cfg.Accel)
	}
	pids := []int{l.Src.Pid(), l.Dst.Pid()}
	if err := l.Down(); err != nil {
		t.Fatal(err)
	}
	if netnsExists(t, l.Netns.Name) {
		t.Errorf("namespace %s left behind", l.Netns.Name)
	}
	for _, p := range pids {
		if alive(p) {
			t.Errorf("QEMU %d still alive", p)
		}
	}
	if err := exec.Command("test", "-e", l.Dir).Run(); err == nil {
		t.Errorf("run directory %s left behind", l.Dir)
	}
}

// A lab that fails to come up removes what it had created.
func TestFailedUpCleansUp(t *testing.T) {
	cfg := labtest.Config(t, 256<<20, workload.Config{Name: workload.Idle})
	cfg.BootTimeout = time.Millisecond // the guest cannot boot that fast
	l, err := lab.Up(context.Background(), cfg)
	if err == nil {
		l.Down()
		t.Fatal("Up succeeded with a 1 ms boot timeout")
	}
	if !strings.Contains(err.Error(), "boot") {
		t.Errorf("error %q does not say the boot failed", err)
	}
	// Namespaces are named after the owning process: none of ours may stay.
	out, _ := exec.Command("ip", "netns", "list").Output()
	if mine := "vmigrate-" + strconv.Itoa(os.Getpid()) + "-"; strings.Contains(string(out), mine) {
		t.Errorf("namespace %s* left behind: %s", mine, out)
	}
	if out, _ := exec.Command("pgrep", "-P", strconv.Itoa(os.Getpid())).Output(); len(out) > 0 {
		t.Errorf("child processes still running: pids %s", out)
	}
}

// Missing prerequisites give one sentence that says what to do.
func TestPrerequisiteErrors(t *testing.T) {
	img := labtest.Image(t)
	tests := []struct {
		name string
		cfg  lab.Config
		want string
	}{
		{"no qemu", lab.Config{Image: img, MemBytes: 256 << 20, QEMU: "/nonexistent/qemu-system-x86_64"}, "install QEMU"},
		{"no image", lab.Config{MemBytes: 256 << 20}, "vmigrate guest build"},
		{"image files gone", lab.Config{Image: guest.Image{Kernel: "/nonexistent/vmlinuz", Initrd: "/nonexistent/initrd"}, MemBytes: 256 << 20}, "vmigrate guest build"},
		{"bad accelerator", lab.Config{Image: img, MemBytes: 256 << 20, Accel: "hvf"}, "want auto, kvm or tcg"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := lab.Up(context.Background(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}
