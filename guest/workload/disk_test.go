package workload

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"
	"time"
	"unsafe"
)

// memDevice is a Device in memory. It can drop writes (acknowledge without
// storing, a lost write) and fail them.
type memDevice struct {
	mu     sync.Mutex
	data   []byte
	drop   bool  // acknowledge writes without storing them
	failAt int   // fail the write number failAt (1-based); 0 never
	writes int   // writes seen
	fail   error // returned by the failed write
}

func (m *memDevice) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off+int64(len(p)) > int64(len(m.data)) {
		return 0, errors.New("read past the end")
	}
	return copy(p, m.data[off:]), nil
}

func (m *memDevice) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writes++
	if m.failAt != 0 && m.writes == m.failAt {
		copy(m.data[off:], p) // the write landed, but the device said no
		return 0, m.fail
	}
	if off+int64(len(p)) > int64(len(m.data)) {
		return 0, errors.New("write past the end")
	}
	if !m.drop {
		copy(m.data[off:], p)
	}
	return len(p), nil
}

func (m *memDevice) setDrop(v bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.drop = v
}

func diskConfig(blocks, rate int) Config {
	return Config{Name: MemDirty, DiskWSSBytes: int64(blocks) * DiskBlockSize, DiskWritesPerSec: rate}.WithDefaults(1 << 30)
}

func populatedDisk(t testing.TB, blocks int) (*Disk, *memDevice) {
	t.Helper()
	dev := &memDevice{data: make([]byte, (blocks+8)*DiskBlockSize)}
	d, err := newDisk(diskConfig(blocks, 100), dev, &fakeClock{}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.populate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return d, dev
}

func mustVerifyDisk(t *testing.T, d *Disk) DiskVerifyResult {
	t.Helper()
	r, err := d.Verify()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestDiskPopulateAndRewrite(t *testing.T) {
	d, dev := populatedDisk(t, 200) // not a multiple of diskChunk
	if r := mustVerifyDisk(t, d); r != (DiskVerifyResult{BlocksChecked: 200, FirstWrong: -1}) {
		t.Errorf("after populate: %+v", r)
	}
	if got := dev.writes; got != 4 { // 64+64+64+8 blocks
		t.Errorf("populate took %d writes, want 4", got)
	}
	for b := range 200 {
		if d.journal[b] != 1 {
			t.Fatalf("journal[%d] = %d after populate, want 1", b, d.journal[b])
		}
	}
	// Beyond the working set nothing was written.
	for _, c := range dev.data[200*DiskBlockSize:] {
		if c != 0 {
			t.Fatal("populate wrote past the working set")
		}
	}
	for range 1000 {
		if err := d.writeOne(); err != nil {
			t.Fatal(err)
		}
	}
	var sum uint64
	for _, g := range d.journal {
		sum += g
	}
	if sum != 200+1000 {
		t.Errorf("journal generations sum to %d, want 1200", sum)
	}
	if r := mustVerifyDisk(t, d); r.BlocksWrong != 0 || r.BlocksChecked != 200 {
		t.Errorf("after 1000 writes: %+v", r)
	}
}

func TestDiskVerifyDetectsLostWrites(t *testing.T) {
	d, dev := populatedDisk(t, 64)
	dev.setDrop(true)
	for range 10 {
		if err := d.writeOne(); err != nil {
			t.Fatal(err)
		}
	}
	lost := 0
	first := -1
	for b, g := range d.journal {
		if g > 1 {
			if first < 0 {
				first = b
			}
			lost++
		}
	}
	r := mustVerifyDisk(t, d)
	if r.BlocksWrong != int64(lost) || r.BlocksStale != int64(lost) || r.FirstWrong != int64(first) {
		t.Errorf("%d lost writes, first at block %d: verify %+v", lost, first, r)
	}
}

func TestDiskVerifyDetectsCorruption(t *testing.T) {
	d, dev := populatedDisk(t, 64)
	dev.data[17*DiskBlockSize+100] ^= 1
	copy(dev.data[40*DiskBlockSize:41*DiskBlockSize], dev.data[41*DiskBlockSize:]) // misplaced
	r := mustVerifyDisk(t, d)
	if r.BlocksWrong != 2 || r.BlocksStale != 0 || r.FirstWrong != 17 {
		t.Errorf("verify %+v, want 2 wrong, none stale, first 17", r)
	}
}

func TestDiskVerifyBeforePopulate(t *testing.T) {
	d, err := NewDisk(diskConfig(4, 10), &memDevice{data: make([]byte, 4*DiskBlockSize)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Verify(); err != ErrNotPopulated {
		t.Fatalf("Verify before populate: %v, want ErrNotPopulated", err)
	}
}

func TestNewDiskRefuses(t *testing.T) {
	dev := &memDevice{data: make([]byte, DiskBlockSize)}
	for _, cfg := range []Config{
		{Name: Idle},
		memdirty(4*PageSize, 8),             // no disk working set
		{Name: MemDirty, DiskWSSBytes: 100}, // invalid
	} {
		if _, err := NewDisk(cfg, dev); err == nil {
			t.Errorf("NewDisk(%+v) succeeded", cfg)
		}
	}
}

func TestDiskRunPacesToTarget(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Unix(1000, 0)
	clk := &fakeClock{now: start, stopAt: start.Add(10 * time.Second), cancel: cancel}
	dev := &memDevice{data: make([]byte, 128*DiskBlockSize)}
	d, err := newDisk(diskConfig(128, 200), dev, clk, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Run(ctx); err != nil {
		t.Fatal(err)
	}
	s := d.Stats()
	if s.WrittenTotal < 1995 || s.WrittenTotal > 2005 {
		t.Errorf("wrote %d blocks in 10s at 200/s", s.WrittenTotal)
	}
	if math.Abs(s.AchievedWritesPerSec-200) > 5 {
		t.Errorf("achieved %.1f writes/s, want ~200", s.AchievedWritesPerSec)
	}
	if s.Running || !s.Populated || s.TargetWritesPerSec != 200 || s.Err != nil {
		t.Errorf("stats after run: %+v", s)
	}
	if r := mustVerifyDisk(t, d); r.BlocksWrong != 0 || r.BlocksChecked != 128 {
		t.Errorf("verify after run: %+v", r)
	}
}

// A failed write stops the writer and is reported; the block it was writing
// may hold either generation, and Verify accepts both.
func TestDiskWriteFailure(t *testing.T) {
	eio := errors.New("EIO")
	dev := &memDevice{data: make([]byte, 64*DiskBlockSize), failAt: 1 + 5, fail: eio} // 1 populate write, then 5
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Unix(1000, 0)
	clk := &fakeClock{now: start, stopAt: start.Add(time.Minute), cancel: cancel}
	d, err := newDisk(diskConfig(64, 100), dev, clk, 5)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Run(ctx); !errors.Is(err, eio) {
		t.Fatalf("Run = %v, want the write error", err)
	}
	if s := d.Stats(); !errors.Is(s.Err, eio) || s.Running {
		t.Errorf("stats after failure: %+v", s)
	}
	if d.uncertain < 0 {
		t.Fatal("no uncertain block after a failed write")
	}
	if r := mustVerifyDisk(t, d); r.BlocksWrong != 0 {
		t.Errorf("verify after a failed write that landed: %+v", r)
	}
}

// Verify runs while the writer writes (go test -race): it must never see a
// block the journal does not describe.
func TestDiskVerifyWhileWriting(t *testing.T) {
	dev := &memDevice{data: make([]byte, 64*DiskBlockSize)}
	d, err := NewDisk(diskConfig(64, 20000), dev)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	verified := 0
	for deadline := time.Now().Add(5 * time.Second); verified < 20 && time.Now().Before(deadline); {
		r, err := d.Verify()
		if errors.Is(err, ErrNotPopulated) {
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if r.BlocksWrong != 0 {
			t.Fatalf("verify while writing: %+v", r)
		}
		verified++
		time.Sleep(2 * time.Millisecond)
	}
	if verified < 20 || d.Stats().WrittenTotal == 0 {
		t.Errorf("%d verifications, %d writes", verified, d.Stats().WrittenTotal)
	}
}

func TestAlignedBlocks(t *testing.T) {
	for n := 1; n < 5; n++ {
		b := alignedBlocks(n)
		if len(b) != n*DiskBlockSize || cap(b) != len(b) || uintptr(unsafe.Pointer(&b[0]))%DiskBlockSize != 0 {
			t.Errorf("alignedBlocks(%d): len %d cap %d at %p", n, len(b), cap(b), &b[0])
		}
	}
}
