package command

import (
	"strings"
	"testing"

	"github.com/vmigrate/vmigrate/guest/workload"
	"github.com/vmigrate/vmigrate/lab/labtest"
)

func TestParseWorkload(t *testing.T) {
	const mem = 512 << 20
	tests := []struct {
		spec    string
		want    workload.Config
		wantErr string
	}{
		{spec: "idle", want: workload.Config{Name: "idle"}},
		{spec: "memdirty", want: workload.Config{Name: "memdirty", WSSBytes: 256 << 20, PagesPerSec: 5000, BytesPerPage: 8, HotFraction: 1, HotWeight: 1}},
		{spec: "memdirty:wss=64M,rate=200,bpp=64,hot=0.1:0.9", want: workload.Config{Name: "memdirty", WSSBytes: 64 << 20, PagesPerSec: 200, BytesPerPage: 64, HotFraction: 0.1, HotWeight: 0.9}},
		{spec: "memdirty:wss=32M,disk=16M,diskrate=200", want: workload.Config{Name: "memdirty", WSSBytes: 32 << 20, PagesPerSec: 5000, BytesPerPage: 8, HotFraction: 1, HotWeight: 1, DiskWSSBytes: 16 << 20, DiskWritesPerSec: 200}},
		{spec: "memdirty:disk=1G", want: workload.Config{Name: "memdirty", WSSBytes: 256 << 20, PagesPerSec: 5000, BytesPerPage: 8, HotFraction: 1, HotWeight: 1, DiskWSSBytes: 1 << 30, DiskWritesPerSec: 100}},
		{spec: "memdirty:diskrate=200", wantErr: "without a disk working set"},
		{spec: "memdirty:disk=5000", wantErr: "disk_wss_bytes"},
		{spec: "memdirty:wss=500M", wantErr: "too little"},
		{spec: "memdirty:speed=3", wantErr: "parameter"},
		{spec: "memdirty:wss=", wantErr: "parameter"},
		{spec: "memdirty:bpp=5000", wantErr: "bytes_per_page"},
		{spec: "idle:wss=1M", wantErr: "only memdirty"},
		{spec: "stress", wantErr: "unknown name"},
		{spec: "memdirty:hot=0.5", wantErr: "HOT_FRACTION"},
	}
	for _, tc := range tests {
		got, err := parseWorkload(tc.spec, mem)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: err %v, want %q", tc.spec, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: got %+v, %v; want %+v", tc.spec, got, err, tc.want)
		}
	}
}

// A working set the guest cannot hold beside its kernel and initramfs is
// refused by the guest's agent, and demo says so at once (rather than
// waiting for a fill that never comes, or letting the guest's kernel run
// out of memory during the migration and panic).
func TestDemoWorkloadTooLarge(t *testing.T) {
	labtest.Image(t)
	code, _, errOut := vmigrate(t, "demo", "--mem", "256M", "--workload", "memdirty:wss=128M", "--accel", "tcg")
	if code == ExitOK || !strings.Contains(errOut, "the guest refused its workload") || !strings.Contains(errOut, "MemAvailable") {
		t.Errorf("demo with 128M of 256M as working set: exit %d, %q", code, errOut)
	}
}
