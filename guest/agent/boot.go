package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmigrate/vmigrate/guest/agentapi"
	"github.com/vmigrate/vmigrate/guest/workload"
)

// run performs the boot steps and serves HTTP; it returns only on a fatal error.
func run(con *console) error {
	if err := mountFilesystems(); err != nil {
		return err
	}
	con.attach()
	reapChildren()
	// The Go runtime handles these by exiting, and PID 1 must not exit.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)

	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return fmt.Errorf("read kernel command line: %w", err)
	}
	loadModules(con)

	netcfg, err := agentapi.ParseNet(string(cmdline))
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	if err := configureNetwork(netcfg); err != nil {
		return err
	}

	srv := &agentapi.Server{
		BootID:       bootID(),
		Booted:       bootTime(),
		MemTotal:     memTotal(),
		MemAvailable: memAvailable,
		Logf:         con.printf,
	}
	if cfg, err := workload.ParseCmdline(string(cmdline)); err != nil {
		con.printf("workload from kernel command line: %v; staying idle", err)
	} else if err := waitDisk(cfg); err != nil {
		con.printf("workload: %v; staying idle", err)
	} else if _, err := srv.SetWorkload(cfg); err != nil {
		con.printf("start workload: %v; staying idle", err)
	}

	ln, err := net.Listen("tcp", ":"+strconv.Itoa(agentapi.Port))
	if err != nil {
		return fmt.Errorf("http: %w", err)
	}
	fmt.Fprintf(con.w, "%s ip=%s boot=%s\n", agentapi.ReadyPrefix, netcfg.Addr.Addr(), srv.BootID)
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	return fmt.Errorf("http: %w", hs.Serve(ln))
}

// waitDisk waits, for a workload with a disk working set, until the kernel
// has created agentapi.DiskPath: virtio_blk probes the disk after its module
// was loaded.
func waitDisk(cfg workload.Config) error {
	if cfg.Name != workload.MemDirty || cfg.DiskWSSBytes == 0 {
		return nil
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, err := os.Stat(agentapi.DiskPath)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("disk %s: not there after 10s (virtio_blk not loaded, or no -device virtio-blk-pci): %w", agentapi.DiskPath, err)
		}
	}
}

// attach points stdout and stderr at /dev/console on the freshly mounted
// devtmpfs, in case the initramfs gave init no console (Go panics go to
// stderr, and they must be seen).
func (c *console) attach() {
	f, err := os.OpenFile("/dev/console", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return
	}
	unix.Dup3(int(f.Fd()), 1, 0)
	unix.Dup3(int(f.Fd()), 2, 0)
	f.Close()
}

// bootID is the kernel's random per-boot UUID.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// bootTime is when the kernel started, on the wall clock.
func bootTime() time.Time {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return time.Now()
	}
	return time.Now().Add(-time.Duration(ts.Nano()))
}

// memAvailable is /proc/meminfo's MemAvailable in bytes, 0 if unreadable.
func memAvailable() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	return agentapi.ParseMemAvailable(b)
}

func memTotal() int64 {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0
	}
	return int64(si.Totalram) * int64(si.Unit)
}
