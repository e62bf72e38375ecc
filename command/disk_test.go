package command

import (
	"encoding/json"
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
