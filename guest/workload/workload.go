package workload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNotPopulated is returned by Verify before the initial fill completed.
var ErrNotPopulated = errors.New("workload: working set not populated yet")

// populateChunk is the number of pages filled per lock hold during Populate.
const populateChunk = 256

// Workload is a memdirty working set: the memory, a version per page, and
// the dirtier that bumps versions. Its methods are safe for concurrent use;
// Run must be called at most once at a time.
type Workload struct {
	cfg   Config
	pages int
	hot   int // pages [0, hot) are the hot set
	clock clock

	mu        sync.Mutex // guards everything below; held by dirty batches and Verify
	mem       []byte
	versions  []uint32
	populated bool
	rng       *rand.Rand

	running atomic.Bool

	smu          sync.Mutex // guards stats; never held together with mu
	dirtied      uint64
	startedAt    time.Time
	populateTime time.Duration
	filled       bool // populate finished (mirror of populated, readable without mu)
	meter        *rateMeter
}

// Stats is a snapshot of the workload's progress.
type Stats struct {
	Running             bool
	Populated           bool
	DirtiedTotal        uint64
	AchievedPagesPerSec float64
	TargetPagesPerSec   float64
	StartedAt           time.Time
	PopulateDuration    time.Duration
}

// VerifyResult counts the pages whose content does not match their version.
type VerifyResult struct {
	PagesChecked int64
	PagesWrong   int64
	FirstWrong   int64 // page index of the first wrong page, or -1
}

// New prepares a memdirty workload over mem, which must be exactly
// cfg.WSSBytes long; the caller owns mem (it may be an anonymous mapping) and
// must not touch it while the workload is in use. cfg must pass Validate.
func New(cfg Config, mem []byte) (*Workload, error) {
	return newWorkload(cfg, mem, realClock{}, rand.Uint64())
}

func newWorkload(cfg Config, mem []byte, c clock, seed uint64) (*Workload, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Name != MemDirty {
		return nil, fmt.Errorf("workload: new: %q has no working set", cfg.Name)
	}
	if int64(len(mem)) != cfg.WSSBytes {
		return nil, fmt.Errorf("workload: new: memory is %d bytes, config wants %d", len(mem), cfg.WSSBytes)
	}
	if cfg.Body == BodyFiles && len(filesCorpus) == 0 {
		return nil, fmt.Errorf("workload: new: body %s needs the guest image's corpus of files, which this guest does not have (rebuild it: vmigrate guest build)", BodyFiles)
	}
	pages := int(cfg.WSSBytes / PageSize)
	hot := pages
	if cfg.HotFraction < 1 {
		hot = min(max(int(cfg.HotFraction*float64(pages)+0.5), 1), pages)
	}
	return &Workload{
		cfg:      cfg,
		pages:    pages,
		hot:      hot,
		clock:    c,
		mem:      mem,
		versions: make([]uint32, pages),
		rng:      rand.New(rand.NewPCG(seed, seed^0x5eed)),
	}, nil
}

// Config returns the configuration the workload runs.
func (w *Workload) Config() Config { return w.cfg }

// Run fills the working set (once) and then dirties pages at the target rate
// until ctx ends; it returns nil when ctx ends, or an error if already running.
func (w *Workload) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("workload: run: already running")
	}
	defer w.running.Store(false)
	w.smu.Lock()
	if w.startedAt.IsZero() {
		w.startedAt = time.Now()
	}
	w.smu.Unlock()

	if w.populate(ctx) != nil {
		return nil // ctx ended during the fill
	}

	now := w.clock.Now()
	pace := newPacer(float64(w.cfg.PagesPerSec), now)
	w.smu.Lock()
	w.meter = newRateMeter(now)
	w.smu.Unlock()
	for ctx.Err() == nil {
		n, wait := pace.next(w.clock.Now())
		if n == 0 {
			w.clock.Sleep(ctx, wait)
			continue
		}
		w.mu.Lock()
		for range n {
			w.dirty(w.pick())
		}
		w.mu.Unlock()
		pace.wrote(n)

		now := w.clock.Now()
		w.smu.Lock()
		w.dirtied += uint64(n)
		w.meter.observe(now, w.dirtied)
		w.smu.Unlock()
	}
	return nil
}

// populate writes version 0 of every page, a chunk per lock hold, so that
// Status and Verify stay responsive. It returns ctx.Err() if ctx ends first.
func (w *Workload) populate(ctx context.Context) error {
	w.mu.Lock()
	done := w.populated
	w.mu.Unlock()
	if done {
		return nil
	}
	t0 := time.Now()
	for first := 0; first < w.pages; first += populateChunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		w.mu.Lock()
		for p := first; p < min(first+populateChunk, w.pages); p++ {
			renderPage(w.page(p), uint64(p), 0, w.cfg.BytesPerPage, w.cfg.Body)
		}
		w.mu.Unlock()
	}
	w.mu.Lock()
	w.populated = true
	w.mu.Unlock()
	w.smu.Lock()
	w.populateTime = time.Since(t0)
	w.filled = true
	w.smu.Unlock()
	return nil
}

func (w *Workload) page(p int) []byte {
	return w.mem[p*PageSize : (p+1)*PageSize : (p+1)*PageSize]
}

// pick chooses the next page to dirty. Callers hold mu (it owns rng).
func (w *Workload) pick() int {
	if w.hot >= w.pages {
		return w.rng.IntN(w.pages)
	}
	if w.rng.Float64() < w.cfg.HotWeight {
		return w.rng.IntN(w.hot)
	}
	return w.hot + w.rng.IntN(w.pages-w.hot)
}

// dirty bumps page p's version and rewrites its window. Callers hold mu.
func (w *Workload) dirty(p int) {
	w.versions[p]++
	writeWindow(w.page(p), uint64(p), w.versions[p], w.cfg.BytesPerPage)
}

// Verify checks every page against its version. It holds the dirtier's lock
// for the whole pass, so the dirtier pauses while it runs.
func (w *Workload) Verify() (VerifyResult, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.populated {
		return VerifyResult{}, ErrNotPopulated
	}
	r := VerifyResult{FirstWrong: -1}
	var want [PageSize]byte
	for p := range w.pages {
		renderPage(want[:], uint64(p), w.versions[p], w.cfg.BytesPerPage, w.cfg.Body)
		r.PagesChecked++
		if !bytes.Equal(want[:], w.page(p)) {
			if r.PagesWrong == 0 {
				r.FirstWrong = int64(p)
			}
			r.PagesWrong++
		}
	}
	return r, nil
}

// Stats returns a snapshot without waiting for a running verification.
func (w *Workload) Stats() Stats {
	w.smu.Lock()
	defer w.smu.Unlock()
	s := Stats{
		Running:           w.running.Load(),
		Populated:         w.filled,
		DirtiedTotal:      w.dirtied,
		TargetPagesPerSec: float64(w.cfg.PagesPerSec),
		StartedAt:         w.startedAt,
		PopulateDuration:  w.populateTime,
	}
	if w.meter != nil {
		s.AchievedPagesPerSec = w.meter.rate(w.clock.Now())
	}
	return s
}
