package migrate_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

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
	w := workload.Config{Name: workload.MemDirty, WSSBytes: wss, PagesPerSec: 2000, BytesPerPage: 8, HotFraction: 1, HotWeight: 1,
		DiskWSSBytes: diskWSS, DiskWritesPerSec: 200}
	cfg := labtest.Config(t, 256<<20, w)
	cfg.DiskBytes = diskBytes
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

// The link cut during the mirror, and the destination QEMU killed after
// the disks were in sync: each fails the migration, and the source runs on
// with memory and disk intact and no mirror left.
func TestMigrateWithDiskFaults(t *testing.T) {
	for _, fault := range []string{"link cut during the mirror", "destination killed after ready"} {
		t.Run(fault, func(t *testing.T) {
			l := diskGuest(t)
			o := diskOptions(t, l)
			path := wanCodec(t)
			o.Transport = path
			o.DiskCopyMode = "write-blocking"
			var once sync.Once
			o.Progress = func(p migrate.Progress) {
				switch {
				case fault == "link cut during the mirror" && p.Phase == migrate.PhaseMirror && p.TransferredBytes > 4<<20:
					once.Do(func() { go path.Close() })
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
