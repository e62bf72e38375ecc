// Package labtest starts the real lab for tests: two QEMUs and the guest.
// Where QEMU, root or the guest image is missing it skips, unless
// VMIGRATE_REQUIRE_QEMU=1 (set by make test), where it fails: CI must not
// pass on tests that never ran.
package labtest

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/vmigrate/vmigrate/guest"
	"github.com/vmigrate/vmigrate/guest/workload"
	"github.com/vmigrate/vmigrate/lab"
	"github.com/vmigrate/vmigrate/qmp"
)

// Required reports whether real-QEMU tests must run rather than skip.
func Required() bool { return os.Getenv("VMIGRATE_REQUIRE_QEMU") == "1" }

// Unavailable skips or fails the test for a missing prerequisite.
func Unavailable(t testing.TB, why string) {
	t.Helper()
	if Required() {
		t.Fatalf("real-QEMU test cannot run: %s", why)
	}
	t.Skipf("real-QEMU test skipped: %s (make test runs it)", why)
}

// Image returns the cached guest image or skips/fails.
func Image(t testing.TB) guest.Image {
	t.Helper()
	if testing.Short() {
		t.Skip("real-QEMU test skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		Unavailable(t, "not root")
	}
	if _, err := exec.LookPath(lab.SystemQEMU); err != nil {
		Unavailable(t, lab.SystemQEMU+" not installed")
	}
	img, err := guest.Find(context.Background(), guest.BuildOptions{CacheDir: CacheDir() + "/guest"})
	if err != nil {
		Unavailable(t, err.Error())
	}
	return img
}

// QEMU is the binary under test: $VMIGRATE_QEMU, else empty, which lets
// the lab choose (QEMU 10.0 for TCG when the system's is older than 9.0).
func QEMU() string { return os.Getenv("VMIGRATE_QEMU") }

// CacheDir is where tests find the guest image: the same place the
// vmigrate binary uses.
func CacheDir() string {
	if d := os.Getenv("VMIGRATE_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return d + "/vmigrate"
	}
	h, _ := os.UserHomeDir()
	return h + "/.cache/vmigrate"
}

// Config is a small lab: TCG unless VMIGRATE_ACCEL says otherwise.
func Config(t testing.TB, mem int64, w workload.Config) lab.Config {
	accel := os.Getenv("VMIGRATE_ACCEL")
	if accel == "" {
		accel = lab.AccelTCG
	}
	return lab.Config{
		Image: Image(t), MemBytes: mem, Workload: w, Accel: accel, QEMU: QEMU(),
		CacheDir: CacheDir(), Log: zaptest.NewLogger(t),
	}
}

// Start brings a lab up and registers its teardown. On failure of the
// test it logs the command lines and the tails of consoles and stderr.
func Start(t testing.TB, cfg lab.Config) *lab.Lab {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l, err := lab.Up(ctx, cfg)
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, vm := range []*lab.VM{l.Src, l.Dst} {
				t.Logf("%s command: %q", vm.Spec.Name, vm.Command)
				t.Logf("%s console tail: %s", vm.Spec.Name, lab.Tail(vm.Spec.Serial, 2000))
				t.Logf("%s stderr tail: %s", vm.Spec.Name, lab.Tail(vm.Stderr, 2000))
			}
		}
		if err := l.Down(); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	return l
}

// StartBusy starts a lab whose guest runs w and waits until w has filled
// its working set.
func StartBusy(t testing.TB, mem int64, w workload.Config) *lab.Lab {
	t.Helper()
	return WaitPopulated(t, Start(t, Config(t, mem, w)))
}

// WaitPopulated waits, for up to 2 minutes, until l's workload has filled
// its working set, and returns l.
func WaitPopulated(t testing.TB, l *lab.Lab) *lab.Lab {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		st, err := l.Guest.Status(ctx)
		if err == nil && st.Workload.Populated {
			return l
		}
		if ctx.Err() != nil {
			t.Fatalf("workload never populated: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// QMP connects to both monitors of the lab for the length of the test.
func QMP(t testing.TB, l *lab.Lab) (src, dst *qmp.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	if src, err = qmp.Dial(ctx, l.Src.Spec.QMP); err != nil {
		t.Fatal(err)
	}
	if dst, err = qmp.Dial(ctx, l.Dst.Spec.QMP); err != nil {
		src.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close(); dst.Close() })
	return src, dst
}

// Status is a VM's run state.
func Status(t testing.TB, c *qmp.Client) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.QueryStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st.Status
}

// Intact asserts that the guest answers at its address and that /verify
// checked wantPages pages and found none wrong.
func Intact(t testing.TB, l *lab.Lab, wantPages int64) {
	t.Helper()
	verifyGuest(t, l.Guest, wantPages)
}

// IntactDisk asserts that /verify checked wantBlocks blocks of the guest's
// disk working set and found none wrong. A lab gets a disk when the test sets
// lab.Config.DiskBytes (on a Config from Config) and the workload a disk
// working set (workload.Config.DiskWSSBytes).
func IntactDisk(t testing.TB, l *lab.Lab, wantBlocks int64) {
	t.Helper()
	verifyDisk(t, l.Guest, wantBlocks)
}

// LibvirtIntactDisk is IntactDisk for the libvirt lab.
func LibvirtIntactDisk(t testing.TB, l *lab.LibvirtLab, wantBlocks int64) {
	t.Helper()
	verifyDisk(t, l.Guest, wantBlocks)
}

func verifyDisk(t testing.TB, g *guest.Client, wantBlocks int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v, err := g.Verify(ctx)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if v.BlocksWrong != 0 || v.BlocksChecked != wantBlocks {
		t.Fatalf("verify: %d disk blocks checked, %d wrong (%d stale, first %d); want %d checked, 0 wrong",
			v.BlocksChecked, v.BlocksWrong, v.BlocksStale, v.FirstWrongBlock, wantBlocks)
	}
}

// StartLibvirt brings a libvirt lab up (small, TCG unless VMIGRATE_ACCEL
// says otherwise) and registers its teardown. Where libvirtd is missing it
// skips or fails like the other prerequisites. On failure of the test it
// logs the domain XML and the tails of daemon logs, consoles and QEMU logs.
func StartLibvirt(t testing.TB, mem int64, w workload.Config) *lab.LibvirtLab {
	t.Helper()
	return StartLibvirtConfig(t, Config(t, mem, w))
}

// StartLibvirtConfig is StartLibvirt with a whole lab.Config (a disk).
func StartLibvirtConfig(t testing.TB, cfg lab.Config) *lab.LibvirtLab {
	t.Helper()
	if _, err := os.Stat(lab.LibvirtdBin); err != nil {
		Unavailable(t, lab.LibvirtdBin+" not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l, err := lab.UpLibvirt(ctx, cfg)
	if err != nil {
		t.Fatalf("libvirt lab up: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("domain xml:\n%s", l.DomainXML)
			for _, side := range []string{lab.SideSrc, lab.SideDst} {
				t.Logf("%s", l.DaemonLog(side))
				t.Logf("%s console tail: %s", side, lab.Tail(l.SerialLog(side), 2000))
				t.Logf("%s qemu log tail: %s", side, lab.Tail(l.QEMULog(side), 2000))
			}
		}
		if err := l.Down(); err != nil {
			t.Errorf("libvirt lab down: %v", err)
		}
	})
	return l
}

// LibvirtIntact asserts that the guest of a libvirt lab answers at its
// address and that /verify checked wantPages pages and found none wrong.
func LibvirtIntact(t testing.TB, l *lab.LibvirtLab, wantPages int64) {
	t.Helper()
	verifyGuest(t, l.Guest, wantPages)
}

func verifyGuest(t testing.TB, g *guest.Client, wantPages int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v, err := g.Verify(ctx)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if v.PagesWrong != 0 || v.PagesChecked != wantPages {
		t.Fatalf("verify: %d pages checked, %d wrong; want %d checked, 0 wrong", v.PagesChecked, v.PagesWrong, wantPages)
	}
}

// Exists reports whether a file is there.
func Exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
