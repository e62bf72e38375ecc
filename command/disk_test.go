package command

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmigrate/vmigrate/lab/labtest"
	"github.com/vmigrate/vmigrate/scenarios"
)

// Disk flags that cannot work are refused before any QEMU is contacted.
func TestRunDiskFlags(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--nbd-socket", "/x"}, "--nbd-socket needs --disk"},
		{[]string{"--dst-qmp", "tcp:h:1", "--disk", "vda"}, "needs --nbd-socket"},
		{[]string{"--disk", "vda", "--disk", "vda"}, "once each"},
		{[]string{"--disk", "a/b"}, "block node name"},
		{[]string{"--disk", "vda", "--disk-copy-mode", "x"}, "background or write-blocking"},
	}
	for _, tc := range cases {
		args := append([]string{"run", "--src-qmp", "/nonexistent/a"}, tc.args...)
		if !strings.Contains(strings.Join(tc.args, " "), "--dst-qmp") {
			args = append(args, "--dst-qmp", "/nonexistent/b")
		}
		code, _, errOut := vmigrate(t, args...)
		if code != ExitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit %d, %q; want exit %d and %q", tc.args, code, errOut, ExitUsage, tc.want)
		}
	}
	code, _, errOut := vmigrate(t, "demo", "--disk-size", "1M", "--workload", "memdirty:wss=16M,disk=2M")
	if code != ExitUsage || !strings.Contains(errOut, "--disk-size at least as large") {
		t.Errorf("demo with a disk working set larger than the disk: exit %d, %q", code, errOut)
	}
}

// demo --disk-size moves a guest that writes to its disk, the disk
// mirrored through the tunnel over an emulated WAN, and /verify finds
// memory and disk intact on the destination.
func TestDemoWithDisk(t *testing.T) {
	labtest.Image(t)
	code, out, _ := vmigrate(t, "demo", "--mem", "256M", "--disk-size", "64M", "--workload", "memdirty:wss=32M,rate=1000,disk=16M,diskrate=100",
		"--wan-bandwidth", "100mbit", "--wan-rtt", "50ms", "--disk-converge-after", "5s", "--json")
	if code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	var res scenarios.DemoResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if !res.Verified || res.BlocksChecked != 16<<20/4096 || res.BlocksWrong != 0 || len(res.Disks) != 1 || res.Disks[0].SentBytes == 0 {
		t.Errorf("verified %v, blocks %d checked %d wrong, disks %+v", res.Verified, res.BlocksChecked, res.BlocksWrong, res.Disks)
	}
}

// disk create makes the target image from flags, refuses bad flags with a
// usage error and never overwrites a file.
func TestDiskCreate(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "vda.img")
	bad := []struct {
		args []string
		want string
	}{
		{[]string{"--target", target}, "either --src-qmp"},
		{[]string{"--target", target, "--size", "1G", "--src-qmp", "/x"}, "either --src-qmp"},
		{[]string{"--target", target, "--size", "1000"}, "multiple of 512"},
		{[]string{"--target", target, "--size", "1G", "--format", "vmdk"}, "raw or qcow2"},
		{[]string{"--target", target, "--size", "1G", "--disk", "vda"}, "--disk goes with --src-qmp"},
		{[]string{"--target", target, "--src-qmp", "/x"}, "needs --disk"},
	}
	for _, tc := range bad {
		code, _, errOut := vmigrate(t, append([]string{"disk", "create"}, tc.args...)...)
		if code != ExitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("disk create %v: exit %d, %q; want usage error with %q", tc.args, code, errOut, tc.want)
		}
		if _, err := os.Stat(target); err == nil {
			t.Fatalf("disk create %v created %s", tc.args, target)
		}
	}
	code, out, errOut := vmigrate(t, "disk", "create", "--target", target, "--size", "64M", "--json")
	if code != ExitOK {
		t.Fatalf("disk create: exit %d: %s", code, errOut)
	}
	var img struct {
		Format string `json:"format"`
		Size   int64  `json:"size"`
	}
	if err := json.Unmarshal([]byte(out), &img); err != nil || img.Format != "raw" || img.Size != 64<<20 {
		t.Fatalf("disk create printed %q (%v)", out, err)
	}
	if fi, err := os.Stat(target); err != nil || fi.Size() != 64<<20 {
		t.Fatalf("target: %v, %v", fi, err)
	}
	os.WriteFile(target, []byte("keep"), 0o600)
	if code, _, errOut := vmigrate(t, "disk", "create", "--target", target, "--size", "64M"); code == ExitOK || !strings.Contains(errOut, "exists") {
		t.Fatalf("disk create over a file: exit %d, %q", code, errOut)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Fatalf("disk create changed an existing file: %q", b)
	}
}
