package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// nsPrefix starts the name of every namespace the lab creates; the owner's
// PID follows, so a later run can tell a stale namespace from a live one.
const nsPrefix = "vmigrate-"

// Netns is a network namespace holding the lab's bridge and the taps of
// both VMs: the guest keeps its address when it moves from one tap to the
// other, as it would on CloudNet's layer-2 VPN.
type Netns struct {
	Name   string
	Bridge string
	HostIP string // the bridge's own address, the client side of the lab
}

// ip runs iproute2 and returns its stderr in the error.
func ip(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, "ip", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// createNetns makes a namespace with loopback up and a bridge carrying
// hostCIDR. On failure nothing is left behind.
func createNetns(ctx context.Context, name, hostCIDR string) (*Netns, error) {
	if err := ip(ctx, "netns", "add", name); err != nil {
		return nil, fmt.Errorf("create network namespace: %w", err)
	}
	n := &Netns{Name: name, Bridge: "br0", HostIP: strings.Split(hostCIDR, "/")[0]}
	steps := [][]string{
		{"-n", name, "link", "set", "lo", "up"},
		{"-n", name, "link", "add", n.Bridge, "type", "bridge", "forward_delay", "0"},
		{"-n", name, "addr", "add", hostCIDR, "dev", n.Bridge},
		{"-n", name, "link", "set", n.Bridge, "up"},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			n.Delete()
			return nil, fmt.Errorf("set up network namespace %s: %w", name, err)
		}
	}
	return n, nil
}

// HTTPClient returns a client whose connections start inside the
// namespace, as a client on the bridge would. Keep-alives are off: after
// a migration a kept connection would carry stale TCP state questions
// that a fresh client would not have.
func (n *Netns) HTTPClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{DialContext: n.DialContext, DisableKeepAlives: true},
		Timeout:   30 * time.Second,
	}
}

// ProbeClient returns a client for a downtime prober: one kept-alive
// connection from the bridge, which every request waits its turn for. A
// fresh connection per request would turn a SYN lost while the guest is
// paused into a retransmission after 1 s (then 3 s, 7 s), a gap the guest
// did not cause; a kept connection's data is retransmitted as soon as
// the guest runs again (RTO of 200 ms on the bridge). A connection that
// breaks is replaced, by dials of at most ProbeDialTimeout each (see there).
func (n *Netns) ProbeClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{DialContext: BoundDial(n.DialContext, ProbeDialTimeout), MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute},
		Timeout:   30 * time.Second,
	}
}

// ProbeDialTimeout bounds a prober's connection attempt. net/http lets a
// dial outlive the request that started it, holding the client's only
// connection slot: a dial whose SYN was lost while the guest was paused
// would wait out TCP's back-off (1, 3, 7 s) and show as downtime the
// guest did not cause. A new attempt sends its SYN at once.
const ProbeDialTimeout = time.Second

// BoundDial is dial with each attempt bounded by d.
func BoundDial(dial func(ctx context.Context, network, addr string) (net.Conn, error), d time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return dial(ctx, network, addr)
	}
}

// AddTap creates a tap device enslaved to the bridge.
func (n *Netns) AddTap(ctx context.Context, tap string) error {
	for _, s := range [][]string{
		{"-n", n.Name, "tuntap", "add", "dev", tap, "mode", "tap"},
		{"-n", n.Name, "link", "set", tap, "master", n.Bridge},
		{"-n", n.Name, "link", "set", tap, "up"},
	} {
		if err := ip(ctx, s...); err != nil {
			return fmt.Errorf("add tap %s: %w", tap, err)
		}
	}
	return nil
}

// Delete removes the namespace and with it the bridge and taps. It uses
// a fresh context: cleanup must run even after the caller was cancelled.
func (n *Netns) Delete() error {
	if err := ip(context.Background(), "netns", "del", n.Name); err != nil {
		return fmt.Errorf("delete network namespace: %w", err)
	}
	return nil
}

// Command returns a command that runs inside the namespace.
func (n *Netns) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// DialContext opens a connection from inside the namespace, as a client on
// the bridge would. The socket is created on an OS thread that has entered
// the namespace; a socket keeps the namespace it was made in, so the
// returned conn works from any goroutine.
func (n *Netns) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		c, err, restored := n.dialLocked(ctx, network, addr)
		if restored {
			// Only a thread back in its own namespace may be reused;
			// otherwise it stays locked and exits with the goroutine.
			runtime.UnlockOSThread()
		}
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

func (n *Netns) dialLocked(ctx context.Context, network, addr string) (c net.Conn, err error, restored bool) {
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("dial %s in %s: %w", addr, n.Name, err), true
	}
	defer self.Close()
	target, err := os.Open("/run/netns/" + n.Name)
	if err != nil {
		return nil, fmt.Errorf("dial %s in %s: %w", addr, n.Name, err), true
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, fmt.Errorf("dial %s: enter namespace %s: %w", addr, n.Name, err), true
	}
	var d net.Dialer
	c, err = d.DialContext(ctx, network, addr)
	if serr := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); serr != nil {
		if c != nil {
			c.Close()
		}
		return nil, fmt.Errorf("dial %s: leave namespace %s: %w", addr, n.Name, serr), false
	}
	return c, err, true
}

// RemoveStale deletes namespaces left by lab processes that no longer
// exist (a crash, a SIGKILL), and kills what still runs inside them.
func RemoveStale(ctx context.Context) []string {
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	if err != nil {
		return nil
	}
	var removed []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], nsPrefix) {
			continue
		}
		pid, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(f[0], nsPrefix), "-", 2)[0])
		if err != nil || processAlive(pid) {
			continue
		}
		if pids, err := exec.CommandContext(ctx, "ip", "netns", "pids", f[0]).Output(); err == nil {
			for _, p := range strings.Fields(string(pids)) {
				if q, err := strconv.Atoi(p); err == nil {
					syscall.Kill(q, syscall.SIGKILL)
				}
			}
		}
		if ip(ctx, "netns", "del", f[0]) == nil {
			removed = append(removed, f[0])
		}
	}
	return removed
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
