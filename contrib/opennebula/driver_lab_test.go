package opennebula_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"libvirt.org/go/libvirt"

	"github.com/vmigrate/vmigrate/guest/workload"
	"github.com/vmigrate/vmigrate/lab/labtest"
)

// buildVmigrate builds the real binary for the lab test.
func buildVmigrate(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "vmigrate")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/vmigrate/vmigrate")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func domainOn(t *testing.T, uri, name string) string {
	t.Helper()
	c, err := libvirt.NewConnect(uri)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d, err := c.LookupDomainByName(name)
	if err != nil {
		return "absent"
	}
	defer d.Free()
	st, _, err := d.GetState()
	if err != nil {
		t.Fatal(err)
	}
	if st == libvirt.DOMAIN_RUNNING {
		return "running"
	}
	return "not running"
}

// The action, fed OpenNebula's argv and action XML, moves a domain of the
// libvirt lab with the real vmigrate through a real `vmigrate tunnel dest`
// on the "destination host", over an emulated 100 Mbit/s 50 ms link; a
// refused migration exits non-zero with an ERROR line and leaves the
// domain running on the source.
func TestDriverAgainstLibvirtLab(t *testing.T) {
	l := labtest.StartLibvirt(t, 256<<20, workload.Config{Name: workload.MemDirty, WSSBytes: 64 << 20, PagesPerSec: 2000, BytesPerPage: 8})
	bin := buildVmigrate(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	if out, err := exec.Command(bin, "tunnel", "keygen", key).CombinedOutput(); err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	port := freePort(t)
	dest := exec.Command(bin, "tunnel", "dest", "--listen", "127.0.0.1:"+strconv.Itoa(port),
		"--forward", "unix:"+filepath.Join(l.DstMigDir, "one.sock"), "--psk-file", key)
	var destLog bytes.Buffer
	dest.Stdout, dest.Stderr = &destLog, &destLog
	dest.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := dest.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dest.Process.Kill()
		dest.Wait()
		if t.Failed() {
			t.Logf("tunnel dest: %s", destLog.String())
		}
	})

	xml, err := os.ReadFile("testdata/action.xml")
	if err != nil {
		t.Fatal(err)
	}
	action := func(deployID string) (int, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "./migrate", deployID, "127.0.0.1", "localhost", "42", "localhost")
		cmd.Stdin = bytes.NewReader(xml)
		cmd.Env = append(os.Environ(),
			"VMIGRATE="+bin, "VMIGRATE_RC=", "VMIGRATE_KVMRC=",
			"VMIGRATE_SRC_URI="+l.SrcURI, "VMIGRATE_DST_URI="+l.DstURI,
			"VMIGRATE_TUNNEL_PORT="+strconv.Itoa(port), "VMIGRATE_PSK_FILE="+key,
			"VMIGRATE_SOCKET="+filepath.Join(l.MigDir, "one.sock"),
			"VMIGRATE_ARGS=--listen-socket "+filepath.Join(l.SrcMigDir, "one.sock")+" --wan-bandwidth 100mbit --wan-rtt 50ms")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		t.Logf("migrate %s -> %d\n%s", deployID, code, stderr.String())
		return code, stderr.String()
	}

	code, stderr := action("nosuch")
	if code == 0 || !strings.Contains(stderr, "ERROR:") || !strings.Contains(stderr, "nosuch") {
		t.Errorf("unknown domain: exit %d; want non-zero with an ERROR line naming it", code)
	}
	if s := domainOn(t, l.SrcURI, l.Domain); s != "running" {
		t.Fatalf("after the refusal the source domain is %s", s)
	}

	code, stderr = action(l.Domain)
	if code != 0 {
		t.Fatalf("migrate: exit %d", code)
	}
	if !strings.Contains(stderr, "INFO:") {
		t.Errorf("no INFO lines for the VM log")
	}
	if s := domainOn(t, l.DstURI, l.Domain); s != "running" {
		t.Errorf("destination domain %s, want running", s)
	}
	if s := domainOn(t, l.SrcURI, l.Domain); s != "absent" {
		t.Errorf("source domain %s, want undefined", s)
	}
	labtest.LibvirtIntact(t, l, (64<<20)/4096)
}
