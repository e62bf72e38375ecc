package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/vmigrate/vmigrate/guest/agentapi"
)

// mountFilesystems mounts /proc, /sys and /dev (devtmpfs).
func mountFilesystems() error {
	for _, m := range []struct {
		source, target, fstype string
		flags                  uintptr
	}{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID},
	} {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return fmt.Errorf("mount %s: %w", m.target, err)
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s: %w", m.target, err)
		}
	}
	return nil
}

// reapChildren waits for orphaned processes re-parented to PID 1. The agent
// starts no children of its own, so it never competes with os/exec.
func reapChildren() {
	ch := make(chan os.Signal, 8)
	signal.Notify(ch, syscall.SIGCHLD)
	go func() { // lives as long as PID 1
		for range ch {
			for {
				var ws unix.WaitStatus
				pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}()
}

// loadModules loads the modules named in agentapi.ModuleOrderFile (or
// agentapi.Modules), in order. A module absent from the image (not built for
// this kernel, or built in) is reported and skipped; a failed load is reported
// and the boot goes on: a missing NIC fails clearly at the network step.
func loadModules(con *console) {
	names := agentapi.Modules
	if f, err := os.Open(agentapi.ModuleOrderFile); err == nil {
		names = nil
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if name := strings.TrimSpace(sc.Text()); name != "" && !strings.HasPrefix(name, "#") {
				names = append(names, name)
			}
		}
		f.Close()
	}
	var loaded []string
	for _, name := range names {
		f, err := os.Open(filepath.Join(agentapi.ModuleDir, name+".ko"))
		if errors.Is(err, os.ErrNotExist) {
			con.printf("module %s: not in this kernel's image, skipped", name)
			continue
		}
		if err != nil {
			con.printf("module %s: %v", name, err)
			continue
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		switch {
		case err == nil:
			loaded = append(loaded, name)
		case errors.Is(err, unix.EEXIST):
			loaded = append(loaded, name+"(already)")
		default:
			con.printf("module %s: load: %v", name, err)
		}
	}
	con.printf("modules loaded: %s", strings.Join(loaded, " "))
}
