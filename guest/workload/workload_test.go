package workload

import (
	"bytes"
	"compress/flate"
	"context"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

func memdirty(wss int64, bpp int) Config {
	return Config{Name: MemDirty, WSSBytes: wss, BytesPerPage: bpp}.WithDefaults(0)
}

// populated returns a filled workload over fresh memory.
func populated(t testing.TB, cfg Config) *Workload {
	t.Helper()
	w, err := newWorkload(cfg, make([]byte, cfg.WSSBytes), &fakeClock{}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.populate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return w
}

func mustVerify(t *testing.T, w *Workload) VerifyResult {
	t.Helper()
	r, err := w.Verify()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestVerifyIntactAfterDirtying(t *testing.T) {
	for _, bpp := range []int{1, 3, 8, 100, PageSize} {
		w := populated(t, memdirty(64*PageSize, bpp))
		for range 1000 {
			w.dirty(w.pick())
		}
		r := mustVerify(t, w)
		if r != (VerifyResult{PagesChecked: 64, PagesWrong: 0, FirstWrong: -1}) {
			t.Errorf("bpp %d: %+v, want 64 checked, none wrong", bpp, r)
		}
	}
}

func TestVerifyBeforePopulate(t *testing.T) {
	cfg := memdirty(4*PageSize, 8)
	w, err := New(cfg, make([]byte, cfg.WSSBytes))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Verify(); err != ErrNotPopulated {
		t.Fatalf("Verify before populate: %v, want ErrNotPopulated", err)
	}
}

func TestVerifyDetectsFlippedByte(t *testing.T) {
	for _, off := range []int{0, 1, 2047, PageSize - 1} {
		w := populated(t, memdirty(16*PageSize, 8))
		w.mem[5*PageSize+off] ^= 0x40
		r := mustVerify(t, w)
		if r.PagesWrong != 1 || r.FirstWrong != 5 {
			t.Errorf("flip at page 5 offset %d: %+v", off, r)
		}
	}
	// Inside the version window too.
	w := populated(t, memdirty(16*PageSize, 8))
	w.mem[9*PageSize+windowOffset(9, 8)+3] ^= 1
	if r := mustVerify(t, w); r.PagesWrong != 1 || r.FirstWrong != 9 {
		t.Errorf("flip in window: %+v", r)
	}
}

func TestVerifyDetectsSwappedPages(t *testing.T) {
	w := populated(t, memdirty(16*PageSize, 8))
	a, b := w.page(3), w.page(11)
	tmp := append([]byte(nil), a...)
	copy(a, b)
	copy(b, tmp)
	r := mustVerify(t, w)
	if r.PagesWrong != 2 || r.FirstWrong != 3 {
		t.Errorf("swapped pages 3 and 11: %+v", r)
	}
}

func TestVerifyDetectsCopiedAndZeroPage(t *testing.T) {
	w := populated(t, memdirty(16*PageSize, 8))
	copy(w.page(7), w.page(6))
	clear(w.page(12))
	if r := mustVerify(t, w); r.PagesWrong != 2 || r.FirstWrong != 7 {
		t.Errorf("copied page 6 over 7, zeroed 12: %+v", r)
	}
}

func TestVerifyDetectsRollback(t *testing.T) {
	for _, bpp := range []int{1, 4, 8, PageSize} {
		for _, back := range []int{1, 2, 255, 1000} {
			if bpp < 4 && back%256 == 0 {
				continue // documented blind spot of windows under 4 bytes
			}
			w := populated(t, memdirty(8*PageSize, bpp))
			for range 1000 - back {
				w.dirty(4)
			}
			old := append([]byte(nil), w.page(4)...)
			for range back {
				w.dirty(4)
			}
			copy(w.page(4), old)
			if r := mustVerify(t, w); r.PagesWrong != 1 || r.FirstWrong != 4 {
				t.Errorf("bpp %d: page rolled back %d versions: %+v", bpp, back, r)
			}
		}
	}
}

func TestWindowIdentifiesVersion(t *testing.T) {
	// With 4+ bytes, distinct versions give distinct windows.
	seen := map[[4]byte]uint32{}
	page := make([]byte, PageSize)
	for v := range uint32(70000) {
		writeWindow(page, 42, v, 4)
		off := windowOffset(42, 4)
		var k [4]byte
		copy(k[:], page[off:])
		if prev, ok := seen[k]; ok {
			t.Fatalf("versions %d and %d share a window", prev, v)
		}
		seen[k] = v
	}
}

func TestDirtyChangesExactlyBBytes(t *testing.T) {
	for _, bpp := range []int{1, 2, 8, 37, 4095, PageSize} {
		w := populated(t, memdirty(32*PageSize, bpp))
		for i := range 300 {
			p := w.pick()
			before := append([]byte(nil), w.page(p)...)
			w.dirty(p)
			changed := 0
			for j, c := range w.page(p) {
				if c != before[j] {
					changed++
				}
			}
			if changed != bpp {
				t.Fatalf("bpp %d: dirty #%d of page %d (v%d) changed %d bytes", bpp, i, p, w.versions[p], changed)
			}
		}
	}
}

func TestVersionWrapStillChangesEveryByte(t *testing.T) {
	// Carries across all four bytes of the version, the worst case.
	page := make([]byte, PageSize)
	prev := make([]byte, PageSize)
	for _, v := range []uint32{0xff, 0xffff, 0xffffff, 0xffffffff} {
		writeWindow(prev, 1, v, 16)
		copy(page, prev)
		writeWindow(page, 1, v+1, 16)
		off := windowOffset(1, 16)
		for i := off; i < off+16; i++ {
			if page[i] == prev[i] {
				t.Errorf("v %#x -> %#x: window byte %d unchanged", v, v+1, i-off)
			}
		}
	}
}

func TestPagesHaveDistinctBodies(t *testing.T) {
	a, b := make([]byte, PageSize), make([]byte, PageSize)
	fillBody(a, 0)
	for p := uint64(1); p < 100; p++ {
		fillBody(b, p)
		same := 0
		for i := range a {
			if a[i] == b[i] {
				same++
			}
		}
		if same > PageSize/32 { // random bytes agree ~1/256 of the time
			t.Fatalf("pages 0 and %d agree on %d bytes", p, same)
		}
	}
}

func TestSkewDistribution(t *testing.T) {
	cfg := memdirty(1000*PageSize, 8)
	cfg.HotFraction, cfg.HotWeight = 0.1, 0.9
	w := populated(t, cfg)
	if w.hot != 100 {
		t.Fatalf("hot pages = %d, want 100", w.hot)
	}
	const n = 200000
	hits := make([]int, w.pages)
	for range n {
		hits[w.pick()]++
	}
	hot := 0
	for p := range w.hot {
		hot += hits[p]
	}
	if got := float64(hot) / n; math.Abs(got-0.9) > 0.01 {
		t.Errorf("share of writes to hot pages = %.3f, want 0.9±0.01", got)
	}
	// Within each set the choice is uniform: a hot page gets ~1800, a cold ~22.
	for p, h := range hits {
		want := 0.9 * n / 100
		if p >= w.hot {
			want = 0.1 * n / 900
		}
		if math.Abs(float64(h)-want) > 6*math.Sqrt(want) {
			t.Errorf("page %d got %d writes, want %.0f", p, h, want)
		}
	}
}

func TestUniformDistribution(t *testing.T) {
	w := populated(t, memdirty(100*PageSize, 8))
	const n = 100000
	hits := make([]int, w.pages)
	for range n {
		hits[w.pick()]++
	}
	for p, h := range hits {
		if math.Abs(float64(h)-1000) > 6*math.Sqrt(1000) {
			t.Errorf("page %d got %d writes, want ~1000", p, h)
		}
	}
}

func TestNewRejects(t *testing.T) {
	if _, err := New(Config{Name: Idle}, nil); err == nil {
		t.Error("New(idle) succeeded")
	}
	if _, err := New(memdirty(8*PageSize, 8), make([]byte, 4*PageSize)); err == nil {
		t.Error("New with short memory succeeded")
	}
	if _, err := New(Config{Name: MemDirty}, nil); err == nil {
		t.Error("New with invalid config succeeded")
	}
}

// fakeClock advances only when the dirtier sleeps; it ends the run by
// cancelling when the simulated time reaches stopAt.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	stopAt time.Time
	cancel context.CancelFunc
	sleeps int
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sleeps++
	c.now = c.now.Add(d)
	if c.cancel != nil && !c.now.Before(c.stopAt) {
		c.cancel()
	}
}

func TestRunPacesToTarget(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Unix(1000, 0)
	clk := &fakeClock{now: start, stopAt: start.Add(10 * time.Second), cancel: cancel}
	cfg := memdirty(256*PageSize, 8)
	w, err := newWorkload(cfg, make([]byte, cfg.WSSBytes), clk, 7)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Run(ctx); err != nil {
		t.Fatal(err)
	}
	s := w.Stats()
	// 10 simulated seconds at 5000 pages/s, give or take one quantum.
	if s.DirtiedTotal < 49990 || s.DirtiedTotal > 50010 {
		t.Errorf("dirtied %d pages in 10s at 5000/s", s.DirtiedTotal)
	}
	if math.Abs(s.AchievedPagesPerSec-5000) > 50 {
		t.Errorf("achieved %.1f pages/s, want ~5000", s.AchievedPagesPerSec)
	}
	if s.Running || !s.Populated || s.TargetPagesPerSec != 5000 {
		t.Errorf("stats after run: %+v", s)
	}
	// ~500 wake-ups a second: batches, not one sleep per page.
	if clk.sleeps > 5100 || clk.sleeps < 4900 {
		t.Errorf("%d sleeps in 10s, want ~5000 (2ms quantum)", clk.sleeps)
	}
	var sum uint64
	for _, v := range w.versions {
		sum += uint64(v)
	}
	if sum != s.DirtiedTotal {
		t.Errorf("versions add up to %d, dirtied %d", sum, s.DirtiedTotal)
	}
	if r := mustVerify(t, w); r.PagesWrong != 0 {
		t.Errorf("after run: %+v", r)
	}
}

func TestRunTwiceConcurrentlyFails(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cfg := memdirty(64*PageSize, 8)
	w, err := New(cfg, make([]byte, cfg.WSSBytes))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()
	for !w.Stats().Running {
		time.Sleep(time.Millisecond)
	}
	if err := w.Run(ctx); err == nil {
		t.Error("second concurrent Run succeeded")
	}
	// Verify while the real dirtier runs (exercised under -race).
	for !w.Stats().Populated {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	if r := mustVerify(t, w); r.PagesWrong != 0 || r.PagesChecked != 64 {
		t.Errorf("verify during run: %+v", r)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if w.Stats().DirtiedTotal == 0 {
		t.Error("nothing dirtied in 20ms at 5000 pages/s")
	}
}

func BenchmarkFill(b *testing.B) {
	page := make([]byte, PageSize)
	b.SetBytes(PageSize)
	for i := range b.N {
		renderPage(page, uint64(i), 0, DefaultBytesPerPage, "")
	}
}

func BenchmarkPopulate64M(b *testing.B) {
	cfg := memdirty(64<<20, 8)
	mem := make([]byte, cfg.WSSBytes)
	b.SetBytes(cfg.WSSBytes)
	for range b.N {
		w, _ := newWorkload(cfg, mem, realClock{}, 1)
		if err := w.populate(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify64M(b *testing.B) {
	w := populated(b, memdirty(64<<20, 8))
	b.SetBytes(w.cfg.WSSBytes)
	b.ResetTimer()
	for range b.N {
		if r, err := w.Verify(); err != nil || r.PagesWrong != 0 {
			b.Fatal(r, err)
		}
	}
}

func BenchmarkDirty(b *testing.B) {
	w := populated(b, memdirty(64<<20, 8))
	b.ResetTimer()
	for range b.N {
		w.dirty(w.pick())
	}
}

// Text bodies are Go source, distinct per page, compressible, and verified
// like random ones.
func TestTextBody(t *testing.T) {
	cfg := memdirty(256*PageSize, 8)
	cfg.Body = BodyText
	w := populated(t, cfg)
	for range 1000 {
		w.dirty(w.pick())
	}
	if r := mustVerify(t, w); r.PagesWrong != 0 || r.PagesChecked != 256 {
		t.Fatalf("%+v", r)
	}
	p0, p1 := w.page(0), w.page(1)
	if string(p0) == string(p1) {
		t.Error("two pages with the same text body")
	}
	var comp bytes.Buffer
	zw, _ := flate.NewWriter(&comp, flate.BestSpeed)
	zw.Write(p0)
	zw.Close()
	if comp.Len() > PageSize/2 {
		t.Errorf("a text page deflates to %d bytes; want it compressible", comp.Len())
	}
	w.page(3)[100] ^= 1
	if r := mustVerify(t, w); r.PagesWrong != 1 || r.FirstWrong != 3 {
		t.Errorf("flipped byte in a text page: %+v", r)
	}
	bad := cfg
	bad.Body = "json"
	if err := bad.Validate(); err == nil {
		t.Error("body json accepted")
	}
	c, err := ParseCmdline(strings.Join(cfg.CmdlineArgs(), " "))
	if err != nil || c.Body != BodyText {
		t.Errorf("cmdline round trip: %+v, %v", c, err)
	}
}

// Files bodies are the corpus's pages in order, repeating only after the
// whole corpus, and verified like the others; without a corpus the
// workload refuses to start.
func TestFilesBody(t *testing.T) {
	cfg := memdirty(64*PageSize, 8)
	cfg.Body = BodyFiles
	saved := filesCorpus
	defer func() { filesCorpus = saved }()
	filesCorpus = nil
	if _, err := newWorkload(cfg, make([]byte, cfg.WSSBytes), &fakeClock{}, 1); err == nil || !strings.Contains(err.Error(), "corpus") {
		t.Fatalf("no corpus: %v", err)
	}
	if err := SetFilesCorpus(make([]byte, PageSize-1)); err == nil {
		t.Error("a corpus shorter than a page accepted")
	}
	corpus := make([]byte, 16*PageSize+100) // the tail is not a page
	rng := rand.New(rand.NewPCG(3, 3))
	for i := range corpus {
		corpus[i] = byte(rng.IntN(64))
	}
	if err := SetFilesCorpus(corpus); err != nil {
		t.Fatal(err)
	}
	w := populated(t, cfg)
	for range 500 {
		w.dirty(w.pick())
	}
	if r := mustVerify(t, w); r.PagesWrong != 0 || r.PagesChecked != 64 {
		t.Fatalf("%+v", r)
	}
	// Page p holds corpus page p mod 16, but for the changing window.
	for _, p := range []int{0, 5, 21} {
		page, want := w.page(p), corpus[p%16*PageSize:][:PageSize]
		diff := 0
		for i := range page {
			if page[i] != want[i] {
				diff++
			}
		}
		if diff > 16+cfg.BytesPerPage {
			t.Errorf("page %d differs from corpus page %d in %d bytes", p, p%16, diff)
		}
	}
	c, err := ParseCmdline(strings.Join(cfg.CmdlineArgs(), " "))
	if err != nil || c.Body != BodyFiles {
		t.Errorf("cmdline round trip: %+v, %v", c, err)
	}
}
