package lab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// VM is one running QEMU process of the lab.
type VM struct {
	Spec    VMSpec
	Command []string // the whole command line, for reproduction
	Stderr  string   // file holding QEMU's stderr

	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	once    sync.Once
}

// startVM starts QEMU, through wrap when it must run inside a namespace.
// QEMU gets SIGKILL if this process dies, and its own process group so a
// terminal's Ctrl-C reaches only vmigrate, which then cleans up in order.
func startVM(spec VMSpec, dir string, wrap func(name string, args ...string) *exec.Cmd) (*VM, error) {
	args, err := spec.Args()
	if err != nil {
		return nil, err
	}
	var cmd *exec.Cmd
	if wrap != nil {
		cmd = wrap(spec.Binary, args...)
	} else {
		cmd = exec.Command(spec.Binary, args...)
	}
	v := &VM{Spec: spec, Command: cmd.Args, Stderr: dir + "/" + spec.Name + ".stderr", cmd: cmd, done: make(chan struct{})}
	f, err := os.Create(v.Stderr)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	go func() {
		v.waitErr = cmd.Wait()
		f.Close()
		close(v.done)
	}()
	return v, nil
}

// Done is closed when the QEMU process has exited.
func (v *VM) Done() <-chan struct{} { return v.done }

// Pid is QEMU's process ID.
func (v *VM) Pid() int { return v.cmd.Process.Pid }

// Kill ends QEMU and waits for it.
func (v *VM) Kill() {
	v.once.Do(func() {
		select {
		case <-v.done:
			return
		default:
		}
		v.cmd.Process.Signal(syscall.SIGKILL)
		<-v.done
	})
}

// Exited is nil while QEMU runs; once it has exited, why (its exit
// status and the tail of its stderr).
func (v *VM) Exited() error {
	select {
	case <-v.done:
		return v.exitError()
	default:
		return nil
	}
}

// exitError describes why QEMU is gone, with the tail of its stderr and
// of the guest's console: a guest that panics (panic=-1 with -no-reboot)
// makes QEMU exit with status 0, and only the console says why.
func (v *VM) exitError() error {
	return fmt.Errorf("qemu %s exited (%v): %s; console tail: %s", v.Spec.Name, v.waitErr, Tail(v.Stderr, 600), Tail(v.Spec.Serial, 800))
}

// waitQMP waits until QEMU accepts connections on its QMP socket.
func (v *VM) waitQMP(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		c, err := net.Dial("unix", v.Spec.QMP)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-v.done:
			return v.exitError()
		case <-ctx.Done():
			return fmt.Errorf("qemu %s: QMP socket %s: %w", v.Spec.Name, v.Spec.QMP, ctx.Err())
		case <-t.C:
		}
	}
}

// waitSerial waits until the guest console shows a line containing want
// and returns that line.
func (v *VM) waitSerial(ctx context.Context, want string) (string, error) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if line, ok := findLine(v.Spec.Serial, want); ok {
			return line, nil
		}
		select {
		case <-v.done:
			return "", v.exitError()
		case <-ctx.Done():
			return "", fmt.Errorf("guest on %s did not print %q: %w; console tail: %s", v.Spec.Name, want, ctx.Err(), Tail(v.Spec.Serial, 600))
		case <-t.C:
		}
	}
}

func findLine(path, want string) (string, bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		if strings.Contains(s.Text(), want) {
			return strings.TrimSpace(s.Text()), true
		}
	}
	return "", false
}

// Tail returns the last n bytes of a file as one line of text.
func Tail(path string, n int64) string {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "(no output)"
		}
		return err.Error()
	}
	if int64(len(b)) > n {
		b = b[int64(len(b))-n:]
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return "(no output)"
	}
	return strings.ReplaceAll(string(b), "\n", " | ")
}

// CPUTime is the CPU time QEMU has used so far (user and system, all its
// threads), from /proc/PID/stat.
func (v *VM) CPUTime() (time.Duration, error) {
	if v.cmd == nil || v.cmd.Process == nil {
		return 0, errors.New("lab: VM not started")
	}
	return ProcessCPU(v.cmd.Process.Pid)
}

// ProcessCPU reads a process's user and system CPU time from
// /proc/PID/stat (fields 14 and 15, in clock ticks of 1/100 s).
func ProcessCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: fields count from the
	// last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("lab: /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("lab: /proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("lab: /proc/%d/stat: %w", pid, err)
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}
