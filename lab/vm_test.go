package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A VM's Exited is nil while its process runs and, once it has exited,
// names the exit status, the tail of what it wrote to stderr and the
// tail of the guest's console (where a guest panic shows).
func TestVMExited(t *testing.T) {
	serial := filepath.Join(t.TempDir(), "src.serial")
	if err := os.WriteFile(serial, []byte("booted\nKernel panic - not syncing: Attempted to kill init!\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := VMSpec{
		Binary: "qemu-system-x86_64", Name: "src", Accel: AccelTCG, MemBytes: 64 << 20,
		Kernel: "/k", Initrd: "/i", QMP: "/r/src.qmp", Serial: serial, MAC: "52:54:00:77:00:10",
	}
	release := make(chan struct{})
	// The command stands in for QEMU: it waits for a line on stdin, then
	// complains and exits 3, as a QEMU that aborts would.
	wrap := func(string, ...string) *exec.Cmd {
		cmd := exec.Command("sh", "-c", "read x; echo 'qemu: assertion failed' >&2; exit 3")
		w, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		go func() { <-release; w.Write([]byte("go\n")); w.Close() }()
		return cmd
	}
	v, err := startVM(spec, t.TempDir(), wrap)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Kill()
	if err := v.Exited(); err != nil {
		t.Errorf("running VM: Exited = %v, want nil", err)
	}
	close(release)
	select {
	case <-v.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the stand-in did not exit")
	}
	err = v.Exited()
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "qemu: assertion failed") ||
		!strings.Contains(err.Error(), "Attempted to kill init") {
		t.Errorf("exited VM: Exited = %v, want its exit status, stderr and console", err)
	}
}
