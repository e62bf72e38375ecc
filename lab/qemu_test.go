package lab

import (
	"slices"
	"strings"
	"testing"
)

func TestVMSpecArgs(t *testing.T) {
	base := VMSpec{
		Binary: "qemu-system-x86_64", Name: "src", Accel: AccelTCG, MemBytes: 512 << 20,
		Kernel: "/k", Initrd: "/i", Append: "console=ttyS0", QMP: "/r/src.qmp", Serial: "/r/src.serial",
		Tap: "tsrc", MAC: "52:54:00:77:00:10",
	}
	tests := []struct {
		name    string
		mod     func(*VMSpec)
		want    [][]string // argument pairs that must appear
		absent  []string
		wantErr string
	}{
		{name: "source on a tap", mod: func(*VMSpec) {},
			want: [][]string{{"-machine", "q35"}, {"-accel", "tcg"}, {"-m", "512M"}, {"-smp", "1"},
				{"-netdev", "tap,id=n0,ifname=tsrc,script=no,downscript=no"},
				{"-device", "virtio-net-pci,netdev=n0,mac=52:54:00:77:00:10"},
				{"-qmp", "unix:/r/src.qmp,server=on,wait=off"}, {"-serial", "file:/r/src.serial"}},
			absent: []string{"-incoming", "-cpu", "-blockdev"}},
		{name: "raw disk", mod: func(s *VMSpec) { s.Disk = "/r/src-disk.img" },
			want: [][]string{
				{"-blockdev", "driver=file,filename=/r/src-disk.img,node-name=vda-file,cache.direct=off"},
				{"-blockdev", "driver=raw,file=vda-file,node-name=vda"},
				{"-device", "virtio-blk-pci,drive=vda,id=vda-dev"}}},
		{name: "qcow2 disk", mod: func(s *VMSpec) { s.Disk = "/r/d.qcow2"; s.DiskFormat = DiskQCOW2 },
			want: [][]string{
				{"-blockdev", "driver=file,filename=/r/d.qcow2,node-name=vda-file,cache.direct=off"},
				{"-blockdev", "driver=qcow2,file=vda-file,node-name=vda"}}},
		{name: "comma in the disk path is doubled", mod: func(s *VMSpec) { s.Disk = "/r/a,b.img" },
			want: [][]string{{"-blockdev", "driver=file,filename=/r/a,,b.img,node-name=vda-file,cache.direct=off"}}},
		{name: "destination disk", mod: func(s *VMSpec) { s.Disk = "/r/dst-disk.img"; s.Incoming = true },
			want: [][]string{{"-device", "virtio-blk-pci,drive=vda,id=vda-dev"}, {"-incoming", "defer"}}},
		{name: "unknown disk format", mod: func(s *VMSpec) { s.Disk = "/d"; s.DiskFormat = "vmdk" }, wantErr: "neither raw nor qcow2"},
		{name: "destination waits for the stream", mod: func(s *VMSpec) { s.Incoming = true; s.Name = "dst" },
			want: [][]string{{"-incoming", "defer"}, {"-name", "vmigrate-dst"}}},
		{name: "kvm keeps the default, migratable cpu model", mod: func(s *VMSpec) { s.Accel = AccelKVM },
			want: [][]string{{"-accel", "kvm"}}, absent: []string{"-cpu"}},
		{name: "probe uses slirp", mod: func(s *VMSpec) { s.Tap = ""; s.UserNet = true; s.MAC = "" },
			want: [][]string{{"-netdev", "user,id=n0,restrict=on"}, {"-device", "virtio-net-pci,netdev=n0"}}},
		{name: "explicit machine and cpus", mod: func(s *VMSpec) { s.Machine = "pc-q35-7.2"; s.CPUs = 2 },
			want: [][]string{{"-machine", "pc-q35-7.2"}, {"-smp", "2"}}},
		{name: "2G", mod: func(s *VMSpec) { s.MemBytes = 2 << 30 }, want: [][]string{{"-m", "2048M"}}},
		{name: "unknown accelerator", mod: func(s *VMSpec) { s.Accel = "hvf" }, wantErr: "neither kvm nor tcg"},
		{name: "odd memory", mod: func(s *VMSpec) { s.MemBytes = 512<<20 + 1 }, wantErr: "whole number of MiB"},
		{name: "tiny memory", mod: func(s *VMSpec) { s.MemBytes = 32 << 20 }, wantErr: "at least 64 MiB"},
		{name: "no kernel", mod: func(s *VMSpec) { s.Kernel = "" }, wantErr: "kernel and initrd"},
		{name: "no qmp", mod: func(s *VMSpec) { s.QMP = "" }, wantErr: "QMP socket"},
		{name: "tap and slirp", mod: func(s *VMSpec) { s.UserNet = true }, wantErr: "exclude"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := base
			tc.mod(&s)
			args, err := s.Args()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range tc.want {
				i := slices.Index(args, p[0])
				for i >= 0 && (i+1 >= len(args) || args[i+1] != p[1]) {
					j := slices.Index(args[i+1:], p[0])
					if j < 0 {
						i = -1
						break
					}
					i += 1 + j
				}
				if i < 0 {
					t.Errorf("missing %s %s in %q", p[0], p[1], args)
				}
			}
			for _, a := range tc.absent {
				if slices.Contains(args, a) {
					t.Errorf("unexpected %s in %q", a, args)
				}
			}
		})
	}
}

// Source and destination must differ only where the lab wants them to,
// or the destination refuses the source's device state.
func TestSourceAndDestinationMatch(t *testing.T) {
	for _, tc := range []struct {
		name     string
		src, dst string // disk images
		differ   int
	}{
		{"no disk", "", "", 4},          // -name, -serial, -qmp, -netdev values
		{"disk", "/s.img", "/d.img", 5}, // and the file node's filename; node names and device id equal
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := VMSpec{Binary: "q", Accel: AccelTCG, MemBytes: 1 << 30, Kernel: "/k", Initrd: "/i", Append: "a", MAC: "m"}
			src, dst := base, base
			src.Name, src.Tap, src.QMP, src.Serial, src.Disk = "src", "tsrc", "/s.qmp", "/s.log", tc.src
			dst.Name, dst.Tap, dst.QMP, dst.Serial, dst.Disk, dst.Incoming = "dst", "tdst", "/d.qmp", "/d.log", tc.dst, true
			a, err := src.Args()
			if err != nil {
				t.Fatal(err)
			}
			b, err := dst.Args()
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != len(a)+2 {
				t.Fatalf("destination has %d args, source %d: want exactly -incoming defer more", len(b), len(a))
			}
			differ := 0
			for i := range a {
				if a[i] != b[i] {
					differ++
				}
			}
			if differ != tc.differ {
				t.Errorf("%d arguments differ, want %d:\n%q\n%q", differ, tc.differ, a, b)
			}
		})
	}
}
