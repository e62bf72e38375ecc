package lab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Paths of the libvirt lab as libvirtd and its QEMUs see them. Each daemon
// has its own mount namespace in which its run directory's subdirectories
// are bound over the system's libvirt directories, so two "hosts" share one
// machine without seeing each other's state.
const (
	LibvirtdBin = "/usr/sbin/libvirtd"

	// LibvirtMigDir is the same path in both daemons' namespaces, backed by
	// a different directory for each: libvirt's unix:// migration listens
	// and connects on one path, and the lab puts itself in between.
	LibvirtMigDir = "/run/vmigrate-mig"

	// systemQEMUModDir is where the system's QEMU keeps its loadable
	// modules. QEMU 10.0 unpacked in the cache looks there too (its
	// compiled-in module path) and crashes on 7.2's modules while libvirt
	// probes its capabilities, so the lab binds 10.0's modules over it.
	systemQEMUModDir = "/usr/lib/x86_64-linux-gnu/qemu"
)

// daemonSpec describes one libvirtd of the lab.
type daemonSpec struct {
	Side       string // "src" or "dst"
	Root       string // the daemon's directory in the run directory
	HostUUID   string // libvirt refuses to migrate to a host with its own UUID
	Hostname   string // the daemon's UTS hostname, for logs and sysinfo
	PortMin    int    // migration_port_min; the two daemons' ranges must not overlap
	PortMax    int
	QEMUModDir string // bound over systemQEMUModDir when not empty
}

// binds returns the bind mounts of the daemon's namespace: source as this
// process sees it, target inside the namespace.
func (s daemonSpec) binds() [][2]string {
	b := [][2]string{
		{filepath.Join(s.Root, "etc"), "/etc/libvirt"},
		{filepath.Join(s.Root, "run"), "/run/libvirt"},
		{filepath.Join(s.Root, "lib"), "/var/lib/libvirt"},
		{filepath.Join(s.Root, "cache"), "/var/cache/libvirt"},
		{filepath.Join(s.Root, "log"), "/var/log/libvirt"},
		{filepath.Join(s.Root, "mig"), LibvirtMigDir},
	}
	if s.QEMUModDir != "" {
		b = append(b, [2]string{s.QEMUModDir, systemQEMUModDir})
	}
	return b
}

// socket is the daemon's read-write socket as this process sees it.
func (s daemonSpec) socket() string { return filepath.Join(s.Root, "run", "libvirt-sock") }

// uri is the connection URI that reaches the daemon from this process.
func (s daemonSpec) uri() string { return "qemu+unix:///system?socket=" + s.socket() }

func (s daemonSpec) logFile() string    { return filepath.Join(s.Root, "log", "libvirtd.log") }
func (s daemonSpec) stderrFile() string { return filepath.Join(s.Root, "libvirtd.stderr") }

// libvirtdConf is the daemon's libvirtd.conf: unix socket only (libvirtd
// does not listen on TCP without --listen), no authentication, warnings
// and errors to a file in the run directory.
func (s daemonSpec) libvirtdConf() string {
	return fmt.Sprintf(`# written by the vmigrate libvirt lab (%s)
host_uuid = %q
unix_sock_dir = "/run/libvirt"
unix_sock_group = "root"
unix_sock_rw_perms = "0770"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
`, s.Side, s.HostUUID)
}

// qemuConf is the daemon's qemu.conf: QEMU as root with no security
// driver, cgroups or private /dev (none of which the lab's container has),
// QEMU's stderr to a plain file (no virtlogd), and a migration port range
// of its own.
func (s daemonSpec) qemuConf() string {
	return fmt.Sprintf(`# written by the vmigrate libvirt lab (%s)
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
migration_port_min = %d
migration_port_max = %d
`, s.Side, s.PortMin, s.PortMax)
}

// script is what runs inside the daemon's fresh mount and UTS namespaces:
// the binds, the hostname, then libvirtd in place of the shell.
func (s daemonSpec) script() string {
	var b strings.Builder
	b.WriteString("set -e\n")
	for _, m := range s.binds() {
		fmt.Fprintf(&b, "mount --bind %s %s\n", shQuote(m[0]), shQuote(m[1]))
	}
	fmt.Fprintf(&b, "echo %s > /proc/sys/kernel/hostname\n", shQuote(s.Hostname))
	fmt.Fprintf(&b, "exec %s --pid-file /run/libvirt/libvirtd.pid\n", LibvirtdBin)
	return b.String()
}

func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// prepare creates the daemon's directories and configuration, starting
// from a copy of the system's /etc/libvirt, and the mount points of its
// binds in this namespace.
func (s daemonSpec) prepare() error {
	for _, m := range s.binds() {
		if m[0] == s.QEMUModDir {
			continue
		}
		if err := os.MkdirAll(m[0], 0o755); err != nil {
			return fmt.Errorf("libvirtd %s: %w", s.Side, err)
		}
		if err := os.MkdirAll(m[1], 0o755); err != nil {
			return fmt.Errorf("libvirtd %s: mount point: %w", s.Side, err)
		}
	}
	etc := filepath.Join(s.Root, "etc")
	if err := os.CopyFS(etc, os.DirFS("/etc/libvirt")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("libvirtd %s: copy /etc/libvirt: %w", s.Side, err)
	}
	for name, text := range map[string]string{"libvirtd.conf": s.libvirtdConf(), "qemu.conf": s.qemuConf()} {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(text), 0o644); err != nil {
			return fmt.Errorf("libvirtd %s: %w", s.Side, err)
		}
	}
	return nil
}

// libvirtd is one running daemon.
type libvirtd struct {
	spec    daemonSpec
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// startLibvirtd starts the daemon inside the lab's network namespace, in
// mount and UTS namespaces of its own. Like QEMU in the QMP lab it gets
// SIGKILL if this process dies and its own process group. The QEMUs it
// starts daemonize out of that group and outlive it; the lab finds them
// through the network namespace they share.
func startLibvirtd(spec daemonSpec, n *Netns) (*libvirtd, error) {
	if err := spec.prepare(); err != nil {
		return nil, err
	}
	return launchLibvirtd(spec, n)
}

// launchLibvirtd starts a daemon whose directories are prepared (a
// restart keeps its state, as a host's daemon restarting would).
func launchLibvirtd(spec daemonSpec, n *Netns) (*libvirtd, error) {
	cmd := n.Command("unshare", "--mount", "--uts", "--propagation", "private", "sh", "-c", spec.script())
	f, err := os.Create(spec.stderrFile())
	if err != nil {
		return nil, fmt.Errorf("libvirtd %s: %w", spec.Side, err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("libvirtd %s: %w", spec.Side, err)
	}
	d := &libvirtd{spec: spec, cmd: cmd, done: make(chan struct{})}
	go func() {
		d.waitErr = cmd.Wait()
		f.Close()
		close(d.done)
	}()
	return d, nil
}

// waitReady waits until the daemon's socket exists: libvirtd creates it
// listening, so connections are accepted from then on. (Probing it with a
// bare connect would put an error in the daemon's log.)
func (d *libvirtd) waitReady(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if st, err := os.Stat(d.spec.socket()); err == nil && st.Mode().Type() == fs.ModeSocket {
			return nil
		}
		select {
		case <-d.done:
			return fmt.Errorf("libvirtd %s exited (%v): %s", d.spec.Side, d.waitErr, d.log())
		case <-ctx.Done():
			return fmt.Errorf("libvirtd %s: socket %s: %w; %s", d.spec.Side, d.spec.socket(), ctx.Err(), d.log())
		case <-t.C:
		}
	}
}

// alive reports whether the daemon still runs.
func (d *libvirtd) alive() bool {
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// kill ends the daemon's process group and waits for the daemon.
func (d *libvirtd) kill() {
	if !d.alive() {
		return
	}
	syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	<-d.done
}

// log is the tail of the daemon's log file and of its stderr.
func (d *libvirtd) log() string {
	return fmt.Sprintf("libvirtd %s log: %s; stderr: %s", d.spec.Side, Tail(d.spec.logFile(), 1500), Tail(d.spec.stderrFile(), 600))
}

// qemuPids returns the PIDs of the QEMUs the daemon has running, from the
// pid files libvirt keeps in its run directory.
func (s daemonSpec) qemuPids() []int {
	files, _ := filepath.Glob(filepath.Join(s.Root, "run", "qemu", "*.pid"))
	var pids []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if p, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && p > 1 {
			pids = append(pids, p)
		}
	}
	return pids
}

// netnsPids lists the processes inside a network namespace.
func netnsPids(ctx context.Context, name string) []int {
	out, err := exec.CommandContext(ctx, "ip", "netns", "pids", name).Output()
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	return pids
}

// killAndReap sends SIGKILL to pids and waits, up to timeout, until they
// are gone. A zombie counts as gone: daemonized QEMUs are reparented to a
// PID 1 that may never reap them.
func killAndReap(pids []int, timeout time.Duration) error {
	for _, p := range pids {
		syscall.Kill(p, syscall.SIGKILL)
	}
	deadline := time.Now().Add(timeout)
	for {
		var left []int
		for _, p := range pids {
			if running(p) {
				left = append(left, p)
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v survive SIGKILL", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// running reports whether pid exists and is not a zombie.
func running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || (b[i+2] != 'Z' && b[i+2] != 'X')
}

// ownerFile in a run directory names the PID of the process that made it.
const ownerFile = "owner.pid"

// removeStaleRunDirs deletes run directories of libvirt labs whose owner
// no longer exists. RemoveStale, run first, has already killed what ran in
// their namespaces (daemons and QEMUs); their mount namespaces, and with
// them the binds, went when the last of those processes died.
func removeStaleRunDirs() []string {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "vml*"))
	var removed []string
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || processAlive(pid) {
			continue
		}
		if os.RemoveAll(d) == nil {
			removed = append(removed, d)
		}
	}
	return removed
}
