package workload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Device is the block device under the disk writer. Offsets and lengths are
// multiples of DiskBlockSize and buffers are aligned to it, so an O_DIRECT
// file qualifies; a write that returned must be durable (O_DSYNC), and a
// read must come from the device, not a cache of the guest (O_DIRECT).
type Device interface {
	io.ReaderAt
	io.WriterAt
}

// diskChunk is the number of blocks per read or write while populating and
// verifying: 256 KiB per system call instead of 4 KiB.
const diskChunk = 64

// Disk is the disk working set: DiskWSSBytes at the start of a Device, a
// journal of the generation each block holds, and the writer that rewrites
// random blocks at the target rate. Its methods are safe for concurrent use;
// Run must be called at most once at a time.
//
// The journal records a block's generation only after its write returned,
// and the writer holds mu across each write, so while Verify holds mu the
// journal and the device agree exactly.
type Disk struct {
	cfg    Config
	blocks int
	dev    Device
	clock  clock

	mu        sync.Mutex // held across each write and the whole of Verify
	journal   []uint64   // generation acknowledged per block; 0: never written
	uncertain int        // block whose write failed (holds gen or gen+1), or -1
	populated bool
	rng       *rand.Rand
	buf       []byte // diskChunk blocks, aligned to DiskBlockSize

	running atomic.Bool

	smu          sync.Mutex // guards stats; never held together with mu
	written      uint64
	startedAt    time.Time
	populateTime time.Duration
	filled       bool
	meter        *rateMeter
	err          error // the failure that stopped the writer
}

// DiskStats is a snapshot of the disk writer's progress.
type DiskStats struct {
	Running              bool
	Populated            bool
	WrittenTotal         uint64 // blocks written after the initial fill
	AchievedWritesPerSec float64
	TargetWritesPerSec   float64
	StartedAt            time.Time
	PopulateDuration     time.Duration
	Err                  error // why the writer stopped, if it failed
}

// DiskVerifyResult counts the blocks whose content is not the generation the
// journal recorded. BlocksStale counts the wrong blocks that hold an intact
// older generation (a write that went missing).
type DiskVerifyResult struct {
	BlocksChecked int64
	BlocksWrong   int64
	BlocksStale   int64
	FirstWrong    int64 // block index of the first wrong block, or -1
}

// NewDisk prepares the disk writer for cfg over dev, which must hold at least
// cfg.DiskWSSBytes. cfg must pass Validate and have a disk working set.
func NewDisk(cfg Config, dev Device) (*Disk, error) {
	return newDisk(cfg, dev, realClock{}, rand.Uint64())
}

func newDisk(cfg Config, dev Device, c clock, seed uint64) (*Disk, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Name != MemDirty || cfg.DiskWSSBytes == 0 {
		return nil, errors.New("workload: new disk: config has no disk working set")
	}
	blocks := int(cfg.DiskWSSBytes / DiskBlockSize)
	return &Disk{
		cfg:       cfg,
		blocks:    blocks,
		dev:       dev,
		clock:     c,
		journal:   make([]uint64, blocks),
		uncertain: -1,
		rng:       rand.New(rand.NewPCG(seed, seed^0xd15c)),
		buf:       alignedBlocks(diskChunk),
	}, nil
}

// alignedBlocks returns n blocks of memory aligned to DiskBlockSize, as
// O_DIRECT wants. The Go heap does not move objects, so the alignment holds.
func alignedBlocks(n int) []byte {
	b := make([]byte, (n+1)*DiskBlockSize)
	off := (DiskBlockSize - int(uintptr(unsafe.Pointer(&b[0]))%DiskBlockSize)) % DiskBlockSize
	return b[off : off+n*DiskBlockSize : off+n*DiskBlockSize]
}

// Run writes generation 1 of every block (once) and then rewrites random
// blocks at the target rate until ctx ends. It returns nil when ctx ends, and
// the error of a failed write, which also stops the writer (see Stats).
func (d *Disk) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("workload: disk run: already running")
	}
	defer d.running.Store(false)
	d.smu.Lock()
	if d.startedAt.IsZero() {
		d.startedAt = time.Now()
	}
	d.smu.Unlock()

	if err := d.populate(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return d.fail(err)
	}
	now := d.clock.Now()
	pace := newPacer(float64(d.cfg.DiskWritesPerSec), now)
	d.smu.Lock()
	d.meter = newRateMeter(now)
	d.smu.Unlock()
	for ctx.Err() == nil {
		n, wait := pace.next(d.clock.Now())
		if n == 0 {
			d.clock.Sleep(ctx, wait)
			continue
		}
		for range n {
			if err := d.writeOne(); err != nil {
				return d.fail(err)
			}
		}
		pace.wrote(n)
		now := d.clock.Now()
		d.smu.Lock()
		d.written += uint64(n)
		d.meter.observe(now, d.written)
		d.smu.Unlock()
	}
	return nil
}

func (d *Disk) fail(err error) error {
	d.smu.Lock()
	d.err = err
	d.smu.Unlock()
	return err
}

// populate writes generation 1 of every block that has none yet, diskChunk
// blocks per write. It returns ctx.Err() if ctx ends first.
func (d *Disk) populate(ctx context.Context) error {
	d.mu.Lock()
	done := d.populated
	d.mu.Unlock()
	if done {
		return nil
	}
	t0 := time.Now()
	for first := 0; first < d.blocks; first += diskChunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := d.populateChunk(first, min(first+diskChunk, d.blocks)); err != nil {
			return err
		}
	}
	d.mu.Lock()
	d.populated = true
	d.mu.Unlock()
	d.smu.Lock()
	d.populateTime = time.Since(t0)
	d.filled = true
	d.smu.Unlock()
	return nil
}

func (d *Disk) populateChunk(first, end int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for b := first; b < end; b++ {
		EncodeBlock(d.buf[(b-first)*DiskBlockSize:], uint64(b), 1)
	}
	if _, err := d.dev.WriteAt(d.buf[:(end-first)*DiskBlockSize], int64(first)*DiskBlockSize); err != nil {
		return fmt.Errorf("workload: disk populate blocks %d..%d: %w", first, end-1, err)
	}
	for b := first; b < end; b++ {
		d.journal[b] = 1
	}
	return nil
}

// writeOne rewrites one random block with its next generation and records
// the generation once the write returned.
func (d *Disk) writeOne() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	b := d.rng.IntN(d.blocks)
	gen := d.journal[b] + 1
	EncodeBlock(d.buf, uint64(b), gen)
	if _, err := d.dev.WriteAt(d.buf[:DiskBlockSize], int64(b)*DiskBlockSize); err != nil {
		d.uncertain = b
		return fmt.Errorf("workload: disk write block %d: %w", b, err)
	}
	d.journal[b] = gen
	return nil
}

// Verify reads every block of the working set back from the device and
// checks it holds the generation the journal recorded. It holds the writer's
// lock for the whole pass, so the writer pauses while it runs. An error is a
// failed read, not a wrong block.
func (d *Disk) Verify() (DiskVerifyResult, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.populated {
		return DiskVerifyResult{}, ErrNotPopulated
	}
	r := DiskVerifyResult{FirstWrong: -1}
	for first := 0; first < d.blocks; first += diskChunk {
		end := min(first+diskChunk, d.blocks)
		if _, err := d.dev.ReadAt(d.buf[:(end-first)*DiskBlockSize], int64(first)*DiskBlockSize); err != nil {
			return DiskVerifyResult{}, fmt.Errorf("workload: disk verify read blocks %d..%d: %w", first, end-1, err)
		}
		for b := first; b < end; b++ {
			st := CheckBlock(d.buf[(b-first)*DiskBlockSize:], uint64(b), d.journal[b])
			if st == BlockNewer && b == d.uncertain && d.journalNext(b) {
				st = BlockOK // the failed write may have landed
			}
			r.BlocksChecked++
			if st == BlockOK {
				continue
			}
			if r.BlocksWrong == 0 {
				r.FirstWrong = int64(b)
			}
			r.BlocksWrong++
			if st == BlockStale {
				r.BlocksStale++
			}
		}
	}
	return r, nil
}

// journalNext reports whether block b holds exactly the generation after the
// journal's (read from the verify buffer). Callers hold mu.
func (d *Disk) journalNext(b int) bool {
	_, g, ok := DecodeBlock(d.buf[(b%diskChunk)*DiskBlockSize:])
	return ok && g == d.journal[b]+1
}

// Stats returns a snapshot without waiting for a running verification.
func (d *Disk) Stats() DiskStats {
	d.smu.Lock()
	defer d.smu.Unlock()
	s := DiskStats{
		Running:            d.running.Load(),
		Populated:          d.filled,
		WrittenTotal:       d.written,
		TargetWritesPerSec: float64(d.cfg.DiskWritesPerSec),
		StartedAt:          d.startedAt,
		PopulateDuration:   d.populateTime,
		Err:                d.err,
	}
	if d.meter != nil {
		s.AchievedWritesPerSec = d.meter.rate(d.clock.Now())
	}
	return s
}
