package command

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmigrate/vmigrate/guest/workload"
	"github.com/vmigrate/vmigrate/lab"
	"github.com/vmigrate/vmigrate/lab/labtest"
	"github.com/vmigrate/vmigrate/migrate"
	"github.com/vmigrate/vmigrate/qmp"
)

// vmigrate runs the command line in-process and returns exit code, stdout
// and stderr.
func vmigrate(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	code := Main(ctx, append([]string{"vmigrate"}, args...), &out, &errb)
	t.Logf("vmigrate %s -> %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out.String(), errb.String())
	return code, out.String(), errb.String()
}

// bareQEMU starts a QEMU that is neither running a guest nor incoming
// (status prelaunch) and returns its QMP socket.
func bareQEMU(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "q")
	plainQEMU(t, "unix", sock, "-S")
	return sock
}

// plainQEMU starts a QEMU with no guest (its BIOS idles) and QMP on network
// (unix or tcp) at addr, and returns once QMP accepts connections.
func plainQEMU(t *testing.T, network, addr string, extra ...string) {
	t.Helper()
	args := append([]string{"-machine", "q35", "-accel", "tcg", "-m", "64M", "-nodefaults", "-display", "none",
		"-qmp", network + ":" + addr + ",server=on,wait=off"}, extra...)
	cmd := exec.Command(lab.SystemQEMU, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; i < 400; i++ {
		if c, err := net.Dial(network, addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("QEMU never listened on %s %s: %s", network, addr, stderr.String())
}

// impostor serves a unix socket with something that is not QMP.
func impostor(t *testing.T, kind string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), kind)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	switch kind {
	case "http": // waits for a request, as an HTTP server does
		srv := &http.Server{Handler: http.NotFoundHandler()}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	case "ssh": // talks first, but not QMP
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Write([]byte("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"))
				time.Sleep(time.Second)
				c.Close()
			}
		}()
	}
	return sock
}

type sideState struct{ src, dst, dstMigration string }

func states(t *testing.T, l *lab.Lab) sideState {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src, err := qmp.Dial(ctx, l.Src.Spec.QMP)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := qmp.Dial(ctx, l.Dst.Spec.QMP)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	s, err1 := src.QueryStatus(ctx)
	d, err2 := dst.QueryStatus(ctx)
	m, err3 := dst.QueryMigrate(ctx)
	if err1 != nil || err2 != nil || err3 != nil {
		t.Fatal(err1, err2, err3)
	}
	return sideState{s.Status, d.Status, m.Status}
}

// Bad input gets a clear error, exit code 2, and changes nothing: after
// all of it, the same lab still migrates and the guest is intact.
func TestRunBadInputChangesNothing(t *testing.T) {
	// Idle, so the same test also runs on QEMU 7.2 (VMIGRATE_QEMU), whose
	// TCG migrations lose writes of a busy guest.
	l := labtest.Start(t, labtest.Config(t, 256<<20, workload.Config{Name: workload.Idle}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	before, err := l.Guest.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	src, dst := l.Src.Spec.QMP, l.Dst.Spec.QMP
	initial := states(t, l)
	if initial != (sideState{"running", "inmigrate", ""}) && initial != (sideState{"running", "inmigrate", "none"}) {
		t.Fatalf("lab starts as %+v", initial)
	}

	missing := filepath.Join(t.TempDir(), "no-such.sock")
	cases := []struct {
		name string
		args []string
		want []string // all must be in stderr
	}{
		{"no such source socket", []string{"--src-qmp", missing, "--dst-qmp", dst}, []string{"source QMP", missing}},
		{"no such destination socket", []string{"--src-qmp", src, "--dst-qmp", missing}, []string{"destination QMP", missing}},
		{"destination not incoming", []string{"--src-qmp", src, "--dst-qmp", bareQEMU(t)}, []string{"destination", "not waiting for an incoming migration", "prelaunch", "-incoming defer", "nothing was changed"}},
		{"swapped", []string{"--src-qmp", dst, "--dst-qmp", src}, []string{"swapped"}},
		{"same monitor twice", []string{"--src-qmp", src, "--dst-qmp", src}, []string{"same monitor"}},
		{"http server as destination", []string{"--src-qmp", src, "--dst-qmp", impostor(t, "http"), "--connect-timeout", "2s"}, []string{"destination QMP", "not a QMP monitor"}},
		{"ssh server as source", []string{"--src-qmp", impostor(t, "ssh"), "--dst-qmp", dst}, []string{"source QMP", "not a QMP monitor"}},
		{"bad incoming uri", []string{"--src-qmp", src, "--dst-qmp", dst, "--incoming", "ftp://x"}, []string{"--incoming", "unix:PATH or tcp:HOST:PORT"}},
		{"unknown flag", []string{"--src-qmp", src, "--dst-qmp", dst, "--bogus"}, []string{"bogus"}},
		{"missing flag", []string{"--src-qmp", src}, []string{"dst-qmp"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := vmigrate(t, append([]string{"run"}, tc.args...)...)
			if code != ExitUsage {
				t.Errorf("exit %d, want %d", code, ExitUsage)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q", w)
				}
			}
			if s := states(t, l); s != initial {
				t.Fatalf("state changed from %+v to %+v", initial, s)
			}
		})
	}

	t.Run("source not running", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := qmp.Dial(ctx, src)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		c.Close() // QEMU serves one QMP client at a time
		code, _, stderr := vmigrate(t, "run", "--src-qmp", src, "--dst-qmp", dst)
		if code != ExitUsage || !strings.Contains(stderr, "source VM is not running (status paused)") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
		if s := states(t, l); s.src != "paused" || s.dst != "inmigrate" || (s.dstMigration != "" && s.dstMigration != "none") {
			t.Errorf("state %+v after refusing a paused source", s)
		}
		if c, err = qmp.Dial(ctx, src); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Cont(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("monitor held by another client", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := qmp.Dial(ctx, dst)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		code, _, stderr := vmigrate(t, "run", "--src-qmp", src, "--dst-qmp", dst, "--connect-timeout", "1s")
		if code != ExitUsage || !strings.Contains(stderr, "busy with another client") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})

	// After all of that the lab still migrates, and the JSON says so.
	code, stdout, _ := vmigrate(t, "run", "--src-qmp", src, "--dst-qmp", dst, "--json", "--allow-unsafe-tcg")
	if code != ExitOK {
		t.Fatalf("migration after the bad inputs: exit %d", code)
	}
	var res migrate.Result
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("--json output is not one JSON object: %v", err)
	}
	var raw map[string]any
	json.Unmarshal([]byte(stdout), &raw)
	for _, k := range []string{"status", "total_ms", "downtime_ms", "stream_bytes", "passes"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("JSON result lacks %q", k)
		}
	}
	if res.Status != "completed" || len(res.Passes) == 0 || res.StreamBytes == 0 {
		t.Errorf("result %+v", res)
	}
	after, err := l.Guest.Status(ctx)
	if err != nil || after.BootID != before.BootID {
		t.Fatalf("guest after the move: %+v, %v; boot ID was %s", after, err, before.BootID)
	}
	if s := states(t, l); s.src != "postmigrate" || s.dst != "running" {
		t.Fatalf("after the move: %+v", s)
	}
}
