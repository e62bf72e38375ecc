package lab_test

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"github.com/vmigrate/vmigrate/guest/workload"
	"github.com/vmigrate/vmigrate/lab/labtest"
)

// The guest writes its disk working set through virtio-blk into the source
// image, /verify finds every block right, and a block damaged on the host
// side is found wrong: the verifier can fail.
func TestDiskWorkloadVerify(t *testing.T) {
	const (
		diskBytes = 64 << 20
		diskWSS   = 16 << 20
		blocks    = diskWSS / workload.DiskBlockSize
		memWSS    = 16 << 20
	)
	w := workload.Config{Name: workload.MemDirty, WSSBytes: memWSS, PagesPerSec: 1000, DiskWSSBytes: diskWSS, DiskWritesPerSec: 200}
	cfg := labtest.Config(t, 256<<20, w)
	cfg.DiskBytes = diskBytes
	l := labtest.WaitPopulated(t, labtest.Start(t, cfg))

	for _, p := range []string{l.SrcDisk, l.DstDisk} {
		if fi, err := os.Stat(p); err != nil || fi.Size() != diskBytes {
			t.Fatalf("disk image %s: %v, %v", p, fi, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := l.Guest.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := st.Workload.Disk
	if d == nil || !d.Populated || d.Error != "" {
		t.Fatalf("disk workload status: %+v", d)
	}
	time.Sleep(2 * time.Second)
	st, err = l.Guest.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("disk: populated in %d ms, %d blocks rewritten, %.0f writes/s (target %.0f)",
		st.Workload.Disk.PopulateMS, st.Workload.Disk.WrittenTotal, st.Workload.Disk.AchievedWritesPerSec, st.Workload.Disk.TargetWritesPerSec)
	if st.Workload.Disk.WrittenTotal <= d.WrittenTotal || !st.Workload.Disk.Running {
		t.Fatalf("disk writer not writing: %+v then %+v", d, st.Workload.Disk)
	}
	labtest.IntactDisk(t, l, blocks)
	labtest.Intact(t, l, memWSS/workload.PageSize)

	src, _ := labtest.QMP(t, l)
	if err := src.Execute(ctx, "stop", nil, nil); err != nil {
		t.Fatal(err)
	}
	// With the guest stopped, every acknowledged write is in the image:
	// each block of the working set is intact, with a generation of at
	// least 1, and the rest of the disk is untouched.
	img, err := os.ReadFile(l.SrcDisk)
	if err != nil {
		t.Fatal(err)
	}
	for b := range blocks {
		i, g, ok := workload.DecodeBlock(img[b*workload.DiskBlockSize:])
		if !ok || i != uint64(b) || g < 1 {
			t.Fatalf("source image block %d: index %d generation %d ok %v", b, i, g, ok)
		}
	}
	if tail := img[diskWSS:]; !bytes.Equal(tail, make([]byte, len(tail))) {
		t.Errorf("source image written past the disk working set")
	}
	// Damage a few blocks: the writer might rewrite one of them between
	// cont and the verification, hardly all.
	damaged := []int64{17, 1234, 2048, 4095}
	f, err := os.OpenFile(l.SrcDisk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range damaged {
		if _, err := f.WriteAt(bytes.Repeat([]byte("garbage!"), workload.DiskBlockSize/8), b*workload.DiskBlockSize); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := src.Execute(ctx, "cont", nil, nil); err != nil {
		t.Fatal(err)
	}
	v, err := l.Guest.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("verify after damage: %+v", v)
	if v.BlocksChecked != blocks || v.BlocksWrong < 1 || v.BlocksWrong > int64(len(damaged)) || v.BlocksStale != 0 || v.PagesWrong != 0 {
		t.Errorf("verify after damaging blocks %v: %+v; want 1..%d wrong, none stale, pages intact", damaged, v, len(damaged))
	}
	if first := v.FirstWrongBlock; first != 17 && first != 1234 && first != 2048 && first != 4095 {
		t.Errorf("first wrong block %d is not one of the damaged %v", first, damaged)
	}
}
