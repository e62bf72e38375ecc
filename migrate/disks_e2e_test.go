package migrate_test

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zeebo/blake3"
	"go.uber.org/zap/zaptest"

	"github.com/vmigrate/vmigrate/blockcodec"
	"github.com/vmigrate/vmigrate/pagecodec"
	"github.com/vmigrate/vmigrate/tunnel"
	"github.com/vmigrate/vmigrate/wanlink"
	"github.com/vmigrate/vmigrate/wanpath"

	"github.com/vmigrate/vmigrate/guest/workload"
	"github.com/vmigrate/vmigrate/lab"
	"github.com/vmigrate/vmigrate/lab/labtest"
	"github.com/vmigrate/vmigrate/migrate"
)

// Disk test guest: 256 MiB of RAM, a 64 MiB disk whose first 16 MiB the
// guest rewrites while it moves.
const (
	diskBytes = 64 << 20
	diskWSS   = 16 << 20
)

func diskGuest(t *testing.T) *lab.Lab {
	t.Helper()
	return diskGuestWith(t, func(*lab.Config) {})
}

func diskGuestWith(t *testing.T, mod func(*lab.Config)) *lab.Lab {
	t.Helper()
	w := workload.Config{Name: workload.MemDirty, WSSBytes: wss, PagesPerSec: 2000, BytesPerPage: 8, HotFraction: 1, HotWeight: 1,
		DiskWSSBytes: diskWSS, DiskWritesPerSec: 200}
	cfg := labtest.Config(t, 256<<20, w)
	cfg.DiskBytes = diskBytes
	mod(&cfg)
	return labtest.WaitPopulated(t, labtest.Start(t, cfg))
}

func diskOptions(t *testing.T, l *lab.Lab) migrate.Options {
	src, dst := labtest.QMP(t, l)
	return migrate.Options{Src: src, Dst: dst, IncomingURI: l.IncomingURI, Disks: []string{"vda"},
		NBDSocket: filepath.Join(l.Dir, "nbd.sock"), Log: zaptest.NewLogger(t)}
}

// A guest writing to its disk and memory moves with its disk through the
// tunnel over a 100 Mbit/s 50 ms link: the mirror crossed the tunnel's
// disk channel, and memory and disk verify on the destination. At the
// mirror's 64 KiB granularity the guest's 200 random 4 KiB writes a second
// dirty 12.8 MB/s, as much as the link carries: the background mirror
// never converges, and after 5 s it turns write-blocking.
func TestMigrateWithDisk(t *testing.T) {
	l := diskGuest(t)
	o := diskOptions(t, l)
	o.Transport = wanCodec(t)
	o.DiskConvergeAfter = 5 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var phases []migrate.Phase
	o.Progress = func(p migrate.Progress) {
		if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
			phases = append(phases, p.Phase)
		}
		if p.Phase == migrate.PhaseMirror && p.TotalBytes > 0 {
			t.Logf("mirror: %d of %d bytes", p.TransferredBytes, p.TotalBytes)
		}
	}
	res, err := migrate.Run(ctx, o)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	t.Logf("disks %+v; phases %v; total %d ms, downtime %d ms", res.Disks, phases, res.TotalMS, res.DowntimeMS)
	// The image is sparse beyond what the guest wrote: QEMU sends those
	// areas as NBD write-zeroes commands, not bytes.
	if len(res.Disks) != 1 || res.Disks[0].ReadyMS <= 0 || res.Disks[0].Bytes < diskBytes || res.Disks[0].SentBytes < diskWSS {
		t.Errorf("disk figures %+v: want vda in sync, at least %d bytes through its channel", res.Disks, diskWSS)
	}
	if len(res.Disks) == 1 {
		c := res.Disks[0].Codec
		if c == nil || c.Writes == 0 || c.PayloadBytes < diskWSS || c.EncodedBytes > res.Disks[0].SentBytes {
			t.Errorf("block codec figures %+v: want every write through it", c)
		} else {
			t.Logf("block codec: %d writes, %d payload bytes, encoded %d; zero %+v ref %+v lz4 %+v raw %+v", c.Writes, c.PayloadBytes, c.EncodedBytes, c.Zero, c.Ref, c.LZ4, c.Raw)
		}
	}
	if len(res.Disks) == 1 && res.Disks[0].CopyMode != "write-blocking" {
		t.Errorf("copy mode %s, want the switch to write-blocking", res.Disks[0].CopyMode)
	}
	if res.DestStatus != "running" {
		t.Errorf("destination %s", res.DestStatus)
	}
	labtest.Intact(t, l, wss/4096)
	labtest.IntactDisk(t, l, diskWSS/4096)
}

// Ctrl-C during the mirror: the source runs on with memory and disk
// intact, the mirror is gone from the source and the export from the
// destination.
func TestMigrateWithDiskCancelled(t *testing.T) {
	l := diskGuest(t)
	o := diskOptions(t, l)
	o.Transport = wanCodec(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var once sync.Once
	o.Progress = func(p migrate.Progress) {
		if p.Phase == migrate.PhaseMirror {
			once.Do(func() { time.AfterFunc(time.Second, cancel) })
		}
	}
	_, err := migrate.Run(ctx, o)
	var me *migrate.Error
	if !errors.As(err, &me) || !me.Cancelled || !me.SourceRunning {
		t.Fatalf("err %v: want a cancelled migration with the source running", err)
	}
	cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
	defer ccancel()
	if jobs, err := o.Src.QueryBlockJobs(cctx); err != nil || len(jobs) != 0 {
		t.Errorf("block jobs left on the source: %+v %v", jobs, err)
	}
	if err := o.Dst.NBDServerStop(cctx); err == nil {
		t.Error("the destination's NBD server was still running")
	}
	labtest.Intact(t, l, wss/4096)
	labtest.IntactDisk(t, l, diskWSS/4096)
}

// smallFS mounts a tmpfs of size bytes for the test.
func smallFS(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "vmigrate-test", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// The link cut during the mirror, the destination QEMU killed before the
// disks were in sync and after, and the destination's file system full:
// each fails the migration, and the source runs on with memory and disk
// intact and no mirror left; the error names the partial target image.
func TestMigrateWithDiskFaults(t *testing.T) {
	faults := []string{"link cut during the mirror", "destination killed before ready", "destination killed after ready", "destination disk full"}
	for _, fault := range faults {
		t.Run(fault, func(t *testing.T) {
			l := diskGuestWith(t, func(c *lab.Config) {
				if fault == "destination disk full" {
					c.DstDiskDir = smallFS(t, 4<<20) // the guest's 16 MiB do not fit
				}
			})
			o := diskOptions(t, l)
			path := wanCodec(t)
			o.Transport = path
			o.DiskCopyMode = "write-blocking"
			var once sync.Once
			o.Progress = func(p migrate.Progress) {
				switch {
				case fault == "link cut during the mirror" && p.Phase == migrate.PhaseMirror && p.TransferredBytes > 4<<20:
					once.Do(func() { go path.Close() })
				case fault == "destination killed before ready" && p.Phase == migrate.PhaseMirror && p.TransferredBytes > 2<<20:
					once.Do(func() { go l.Dst.Kill() })
				case fault == "destination killed after ready" && p.Phase == migrate.PhasePrecopy && p.TransferredBytes > 8<<20:
					once.Do(func() { go l.Dst.Kill() })
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			res, err := migrate.Run(ctx, o)
			var me *migrate.Error
			if !errors.As(err, &me) || !me.SourceRunning || me.VMOnDest {
				t.Fatalf("err %v: want a failure with the source running", err)
			}
			t.Logf("%s: %v; disks %+v", fault, err, res.Disks)
			if !strings.Contains(err.Error(), "partial copy") || !strings.Contains(err.Error(), l.DstDisk) {
				t.Errorf("the error does not name the partial target %s: %v", l.DstDisk, err)
			}
			cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
			defer ccancel()
			if jobs, err := o.Src.QueryBlockJobs(cctx); err != nil || len(jobs) != 0 {
				t.Errorf("block jobs left on the source: %+v %v", jobs, err)
			}
			labtest.Intact(t, l, wss/4096)
			labtest.IntactDisk(t, l, diskWSS/4096)
		})
	}
}

// lyingIndex announces the blocks of content but reads each back with one
// byte changed: a neighbour image that changed under the index without
// the index noticing (same size and mtime), or a bad disk.
type lyingIndex struct{ blocks map[[32]byte][]byte }

func (x *lyingIndex) BlockSize() int { return 4096 }

func (x *lyingIndex) Keys() []uint64 {
	keys := make([]uint64, 0, len(x.blocks))
	for fp := range x.blocks {
		keys = append(keys, binary.LittleEndian.Uint64(fp[:8]))
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

func (x *lyingIndex) Read(fp [32]byte, buf []byte) error {
	b, ok := x.blocks[fp]
	if !ok {
		return fmt.Errorf("no block %x", fp[:8])
	}
	copy(buf, b)
	buf[100] ^= 0x40
	return nil
}

// A block the destination's index gives back wrong is refused: the
// decoder checks every referenced block's BLAKE3, the disk channel fails
// with a corrupt-block error, and the migration fails with the source
// running, its memory and disk intact.
func TestMigrateWithDiskCorruptReference(t *testing.T) {
	// The disk starts with 8 MiB of distinct blocks past the guest's
	// working set; the index "holds" them.
	img := filepath.Join(t.TempDir(), "base.img")
	content := make([]byte, diskBytes)
	r := mrand.New(mrand.NewPCG(7, 7))
	idx := &lyingIndex{blocks: map[[32]byte][]byte{}}
	for off := 32 << 20; off < 40<<20; off += 4096 {
		b := content[off : off+4096]
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		idx.blocks[blake3.Sum256(b)] = b
	}
	if err := os.WriteFile(img, content, 0o644); err != nil {
		t.Fatal(err)
	}
	l := diskGuestWith(t, func(c *lab.Config) { c.DiskImage = img })
	o := diskOptions(t, l)
	k := make([]byte, 32)
	crand.Read(k)
	link := wanlink.Config{Bandwidth: 100e6, RTT: 50 * time.Millisecond}
	path, err := wanpath.New(wanpath.Config{Dir: t.TempDir(), Link: &link, Tunnel: tunnel.Config{PSK: k}, DestTunnel: tunnel.Config{PSK: k},
		Codec: pagecodec.New(pagecodec.Config{}), DiskCodec: &blockcodec.Config{}, DiskIndex: idx, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	o.Transport = path
	o.DiskCopyMode = "write-blocking"
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	_, err = migrate.Run(ctx, o)
	var me *migrate.Error
	if !errors.As(err, &me) || !me.SourceRunning || me.VMOnDest {
		t.Fatalf("err %v: want a failure with the source running", err)
	}
	if !blockcodec.IsCorrupt(path.Err()) && !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("the failure does not say a block was corrupt: %v (path: %v)", err, path.Err())
	}
	t.Logf("refused: %v", err)
	labtest.Intact(t, l, wss/4096)
	labtest.IntactDisk(t, l, diskWSS/4096)
	// The source's image past the working set is still the base image.
	got, err := os.ReadFile(l.SrcDisk)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[diskWSS:], content[diskWSS:]) {
		t.Errorf("the source's disk changed past the guest's working set")
	}
}
