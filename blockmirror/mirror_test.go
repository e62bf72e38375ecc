package blockmirror_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/vmigrate/vmigrate/blockmirror"
	"github.com/vmigrate/vmigrate/lab"
	"github.com/vmigrate/vmigrate/lab/labtest"
	"github.com/vmigrate/vmigrate/qmp"
)

const diskSize = 32 << 20

// qemuBins are the QEMUs to test against: the system's, and the 10.0
// that make deps unpacks, when there.
func qemuBins(t *testing.T) []string {
	t.Helper()
	if testing.Short() {
		t.Skip("real-QEMU test skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		labtest.Unavailable(t, "not root")
	}
	if _, err := exec.LookPath(lab.SystemQEMU); err != nil {
		labtest.Unavailable(t, lab.SystemQEMU+" not installed")
	}
	bins := []string{lab.SystemQEMU}
	if q := lab.UnpackedQEMU10(labtest.CacheDir()); fileExists(q) {
		bins = append(bins, q)
	}
	return bins
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// diskQEMU starts a paused QEMU holding a raw image as block node "vda"
// behind a virtio-blk device, and returns its QMP client; extra arguments
// follow (the destination's -incoming defer: its device leaves the node
// writable for the export until the migration activates it). It is killed
// when the test ends.
func diskQEMU(t *testing.T, bin, image string, extra ...string) (*qmp.Client, *exec.Cmd) {
	t.Helper()
	return formatQEMU(t, bin, image, blockmirror.FormatRaw, extra...)
}

// formatQEMU is diskQEMU with an image of another format.
func formatQEMU(t *testing.T, bin, image, format string, extra ...string) (*qmp.Client, *exec.Cmd) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "qmp")
	args := append([]string{"-machine", "q35", "-accel", "tcg", "-m", "64M", "-nodefaults", "-display", "none", "-S",
		"-blockdev", "driver=file,filename=" + image + ",node-name=vda-file",
		"-blockdev", "driver=" + format + ",file=vda-file,node-name=vda",
		"-device", "virtio-blk-pci,drive=vda,id=vda-dev",
		"-qmp", "unix:" + sock + ",server=on,wait=off"}, extra...)
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		c, err := qmp.Dial(ctx, sock)
		if err == nil {
			t.Cleanup(func() { c.Close() })
			return c, cmd
		}
		if ctx.Err() != nil {
			t.Fatalf("QEMU %s: %v: %s", bin, err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func image(t *testing.T, name string, random bool) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	b := make([]byte, diskSize)
	if random {
		rand.Read(b)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// relay forwards every connection on a unix socket to another one and
// counts the bytes, as vmigrate's tunnel end will.
func relay(t *testing.T, to string) (string, *atomic.Int64) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "relay")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int64
	go func() { // ends when the listener closes
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				d, err := net.Dial("unix", to)
				if err != nil {
					return
				}
				defer d.Close()
				go func() { io.Copy(c, d); c.Close() }()
				k, _ := io.Copy(d, c)
				n.Add(k)
			}()
		}
	}()
	return sock, &n
}

func hmp(t *testing.T, c *qmp.Client, cmd string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := c.HumanMonitorCommand(ctx, cmd)
	t.Logf("%s: %q", cmd, out)
	if err != nil || strings.Contains(strings.ToLower(out), "error") {
		t.Fatalf("%s: %v %s", cmd, err, out)
	}
}

// The mirror copies a disk through a relay to the destination's export,
// keeps copying writes made during the mirror and after it is ready, and
// its completion leaves both images equal; the source keeps its disk.
func TestMirrorCopiesDisk(t *testing.T) {
	for _, bin := range qemuBins(t) {
		name := "system"
		if bin != lab.SystemQEMU {
			name = "qemu10"
		}
		t.Run(name, func(t *testing.T) {
			srcImg, dstImg := image(t, "src.img", true), image(t, "dst.img", false)
			src, _ := diskQEMU(t, bin, srcImg)
			dst, _ := diskQEMU(t, bin, dstImg, "-incoming", "defer")
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			exp := filepath.Join(t.TempDir(), "nbd")
			if err := blockmirror.Export(ctx, dst, exp, []string{"vda"}); err != nil {
				t.Fatal(err)
			}
			via, relayed := relay(t, exp)
			m, err := blockmirror.Start(ctx, src, blockmirror.Options{Disks: []string{"vda"}, Socket: via, Log: zaptest.NewLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			// Writes come through the guest's device, as a guest's would.
			hmp(t, src, `qemu-io -d /machine/peripheral/vda-dev/virtio-backend "write -P 0x55 1M 64k"`)
			if err := m.WaitReady(ctx); err != nil {
				t.Fatal(err)
			}
			hmp(t, src, `qemu-io -d /machine/peripheral/vda-dev/virtio-backend "write -P 0x66 3M 128k"`)
			st := m.Stats(ctx)
			if len(st) != 1 || st[0].ReadyMS <= 0 || st[0].Bytes < diskSize {
				t.Errorf("stats %+v", st)
			}
			if err := m.Complete(ctx); err != nil {
				t.Fatal(err)
			}
			if err := blockmirror.StopExport(ctx, dst); err != nil {
				t.Fatal(err)
			}
			if jobs, err := src.QueryBlockJobs(ctx); err != nil || len(jobs) != 0 {
				t.Errorf("jobs left: %+v %v", jobs, err)
			}
			a, _ := os.ReadFile(srcImg)
			b, _ := os.ReadFile(dstImg)
			if !bytes.Equal(a, b) {
				i := 0
				for i < len(a) && i < len(b) && a[i] == b[i] {
					i++
				}
				t.Fatalf("the destination image differs from the source's from byte %d (sizes %d, %d)", i, len(a), len(b))
			}
			if !bytes.Equal(a[1<<20:1<<20+64<<10], bytes.Repeat([]byte{0x55}, 64<<10)) || !bytes.Equal(a[3<<20:3<<20+128<<10], bytes.Repeat([]byte{0x66}, 128<<10)) {
				t.Errorf("the source image lacks the writes made during the mirror: %x at 1M, %x at 3M", a[1<<20:1<<20+8], a[3<<20:3<<20+8])
			}
			if relayed.Load() < diskSize {
				t.Errorf("only %d bytes went through the relay", relayed.Load())
			}
		})
	}
}

// A destination that dies during the mirror fails it; Abort leaves the
// source with no job and no NBD client node, its disk untouched.
func TestMirrorDestinationDies(t *testing.T) {
	bin := qemuBins(t)[0]
	srcImg, dstImg := image(t, "src.img", true), image(t, "dst.img", false)
	before, _ := os.ReadFile(srcImg)
	src, _ := diskQEMU(t, bin, srcImg)
	dst, dstCmd := diskQEMU(t, bin, dstImg, "-incoming", "defer")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	exp := filepath.Join(t.TempDir(), "nbd")
	if err := blockmirror.Export(ctx, dst, exp, []string{"vda"}); err != nil {
		t.Fatal(err)
	}
	m, err := blockmirror.Start(ctx, src, blockmirror.Options{Disks: []string{"vda"}, Socket: exp, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.BlockJobSetSpeed(ctx, "mirror-vda", 4<<20); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	dstCmd.Process.Kill()
	err = m.WaitReady(ctx)
	if !errors.Is(err, blockmirror.ErrJobFailed) {
		t.Fatalf("WaitReady: %v, want ErrJobFailed", err)
	}
	if err := m.Abort(ctx); err != nil {
		t.Fatalf("abort: %v", err)
	}
	if jobs, err := src.QueryBlockJobs(ctx); err != nil || len(jobs) != 0 {
		t.Errorf("jobs left: %+v %v", jobs, err)
	}
	var nodes []struct {
		NodeName string `json:"node-name"`
	}
	if err := src.Execute(ctx, "query-named-block-nodes", nil, &nodes); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if strings.Contains(n.NodeName, "mirror-target") {
			t.Errorf("NBD client node %s left on the source", n.NodeName)
		}
	}
	after, _ := os.ReadFile(srcImg)
	if !bytes.Equal(before, after) {
		t.Error("the source disk changed")
	}
}

// Bad input is refused and leaves nothing behind.
func TestMirrorRefuses(t *testing.T) {
	bin := qemuBins(t)[0]
	src, _ := diskQEMU(t, bin, image(t, "src.img", true))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cases := []struct {
		o    blockmirror.Options
		want string
	}{
		{blockmirror.Options{}, "no disks"},
		{blockmirror.Options{Disks: []string{"vda"}}, "no socket"},
		{blockmirror.Options{Disks: []string{"vda"}, Sockets: map[string]string{"vdb": "/x"}}, "no socket"},
		{blockmirror.Options{Disks: []string{"vda"}, Socket: "/x", Sync: "most"}, "sync"},
		{blockmirror.Options{Disks: []string{"vda"}, Socket: "/x", Granularity: 3000}, "granularity"},
		{blockmirror.Options{Disks: []string{"vda"}, Socket: filepath.Join(t.TempDir(), "nobody")}, "NBD client"},
	}
	for _, tc := range cases {
		_, err := blockmirror.Start(ctx, src, tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err %v, want %q", tc.o, err, tc.want)
		}
	}
	if jobs, err := src.QueryBlockJobs(ctx); err != nil || len(jobs) != 0 {
		t.Errorf("jobs left: %+v %v", jobs, err)
	}
}
