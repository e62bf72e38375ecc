package stopcopy

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"
)

// fuzzCase is a history and the parameters of the policies run on it.
type fuzzCase struct {
	h           History
	window      int
	minPages    int64
	maxPasses   int
	mult        float64
	maxTime     time.Duration
	maxBytes    int64
	maxDowntime time.Duration
	onBreach    Action
}

const maxFuzzPasses = 64

// encode writes c as little-endian 8-byte words: the parameters, History.Now,
// then five words a pass. decode reads it back, zero-filling a short input,
// so any byte string is a case.
func (c fuzzCase) encode() []byte {
	var b []byte
	w := func(v uint64) { b = binary.LittleEndian.AppendUint64(b, v) }
	reading := func(r Reading) {
		w(uint64(r.Elapsed))
		w(uint64(r.RemainingBytes))
		w(uint64(r.TransferredBytes))
		w(math.Float64bits(r.WireRate))
	}
	w(uint64(c.h.RAMBytes))
	w(uint64(c.h.PageSize))
	w(uint64(c.window))
	w(uint64(c.minPages))
	w(uint64(c.maxPasses))
	w(math.Float64bits(c.mult))
	w(uint64(c.maxTime))
	w(uint64(c.maxBytes))
	w(uint64(c.maxDowntime))
	w(uint64(c.onBreach))
	reading(c.h.Now)
	for _, p := range c.h.Passes {
		w(uint64(p.Pass))
		reading(p.Reading)
	}
	return b
}

func decode(b []byte) fuzzCase {
	r := func() uint64 {
		var word [8]byte
		n := copy(word[:], b)
		b = b[n:]
		return binary.LittleEndian.Uint64(word[:])
	}
	reading := func() Reading {
		return Reading{
			Elapsed:          time.Duration(r()),
			RemainingBytes:   int64(r()),
			TransferredBytes: int64(r()),
			WireRate:         math.Float64frombits(r()),
		}
	}
	var c fuzzCase
	c.h.RAMBytes = int64(r())
	c.h.PageSize = int64(r())
	c.window = int(r())
	c.minPages = int64(r())
	c.maxPasses = int(r())
	c.mult = math.Float64frombits(r())
	c.maxTime = time.Duration(r())
	c.maxBytes = int64(r())
	c.maxDowntime = time.Duration(r())
	c.onBreach = Action(r())
	c.h.Now = reading()
	for len(b) > 0 && len(c.h.Passes) < maxFuzzPasses {
		c.h.Passes = append(c.h.Passes, Pass{Pass: int(r()), Reading: reading()})
	}
	return c
}

func (c fuzzCase) policies() []Policy {
	base := []Policy{
		Smart{}, Smart{Window: c.window, MinPages: c.minPages},
		Xen{}, Xen{MaxPasses: c.maxPasses, MaxRAMMultiple: c.mult, MinPages: c.minPages},
		QEMU{},
	}
	all := append([]Policy(nil), base...)
	for _, p := range append(base, nil) {
		all = append(all, Budget{Inner: p, MaxTime: c.maxTime, MaxBytes: c.maxBytes, MaxDowntime: c.maxDowntime, OnBreach: c.onBreach})
	}
	return all
}

var knownRules = map[string]bool{
	RuleLocalMinimum: true, RuleNoProgress: true, RuleFewPages: true, RuleMaxPasses: true,
	RuleMaxRAMMultiple: true, RuleBudgetTime: true, RuleBudgetBytes: true, RuleBudgetDowntime: true,
	RuleFirstPass: true, RuleFilling: true, RuleShrinking: true, RuleWaiting: true, RuleUnderLimits: true, RuleQEMU: true,
}

// checkCase checks the properties every policy has on any history: Decide
// is deterministic and leaves h alone, returns a known action and rule with
// a reason, only a Budget aborts, and a Budget never continues once MaxTime
// or MaxBytes is reached nor stops for longer than MaxDowntime.
func checkCase(t *testing.T, c fuzzCase) {
	t.Helper()
	before := c.encode()
	for _, p := range c.policies() {
		d := p.Decide(c.h)
		if again := p.Decide(c.h); again != d {
			t.Fatalf("%s: not deterministic: %s then %s", p.Name(), d, again)
		}
		if !bytes.Equal(c.encode(), before) {
			t.Fatalf("%s: Decide changed the history", p.Name())
		}
		if d.Action != Continue && d.Action != StopAndCopy && d.Action != Abort {
			t.Fatalf("%s: action %s", p.Name(), d.Action)
		}
		if !knownRules[d.Rule] || d.Reason == "" {
			t.Fatalf("%s: rule %q, reason %q", p.Name(), d.Rule, d.Reason)
		}
		b, isBudget := p.(Budget)
		if !isBudget {
			if d.Action == Abort {
				t.Fatalf("%s aborted: %s", p.Name(), d)
			}
			continue
		}
		now, ok := c.h.Now, c.h.Now != (Reading{})
		if !ok && len(c.h.Passes) > 0 {
			now, ok = c.h.Passes[len(c.h.Passes)-1].Reading, true
		}
		breached := ok && (b.MaxTime > 0 && now.Elapsed >= b.MaxTime || b.MaxBytes > 0 && now.TransferredBytes >= b.MaxBytes)
		if breached && d.Action == Continue {
			t.Fatalf("%s continued past a limit (elapsed %s, sent %d; %+v): %s", p.Name(), now.Elapsed, now.TransferredBytes, b, d)
		}
		if d.Action == StopAndCopy && b.MaxDowntime > 0 {
			if dt, ok := ExpectedDowntime(b.rest(c.h), c.h.wireRate()); ok && dt > b.MaxDowntime {
				t.Fatalf("%s stops for %s, over %s: %s", p.Name(), dt, b.MaxDowntime, d)
			}
		}
	}
	for _, p := range c.policies()[:5] {
		Replay(p, c.h)
	}
}

func FuzzDecide(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.json"))
	for _, name := range files {
		h := loadTrace(f, filepath.Base(name))
		f.Add(fuzzCase{h: h}.encode())
		f.Add(fuzzCase{h: h, window: 2, minPages: -1, maxPasses: 3, mult: 0.2,
			maxTime: 19 * time.Second, maxDowntime: 300 * time.Millisecond, onBreach: StopAndCopy}.encode())
	}
	for _, h := range synthetic {
		f.Add(fuzzCase{h: h, maxBytes: 1 << 30, maxDowntime: time.Second, onBreach: Abort}.encode())
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		checkCase(t, decode(b))
	})
}

// TestFuzzRoundTrip keeps the fuzz encoding honest.
func TestFuzzRoundTrip(t *testing.T) {
	c := fuzzCase{h: synthetic["oscillation"], window: 3, minPages: 7, maxPasses: 9, mult: 2.5,
		maxTime: time.Minute, maxBytes: 5, maxDowntime: time.Second, onBreach: StopAndCopy}
	c.h.Now = Reading{Elapsed: time.Hour, WireRate: math.NaN()}
	if got := decode(c.encode()).encode(); !bytes.Equal(got, c.encode()) {
		t.Fatal("decode(encode(c)) != c")
	}
}

// randomHistory is a plausible pre-copy: a RAM size, a rate (sometimes
// unknown), and a dirty set that shrinks, stalls, bursts or grows.
func randomHistory(r *rand.Rand) fuzzCase {
	ramPages := 1000 + r.Int64N(200000)
	rate := 1e6 + r.Float64()*1e9
	if r.IntN(5) == 0 {
		rate = 0
	}
	h := History{RAMBytes: ramPages * 4096, PageSize: []int64{0, 4096, 65536}[r.IntN(3)]}
	ps := h.pageSize()
	cur, sent, elapsed := ramPages*4096/ps, int64(0), 100*time.Millisecond
	for i := range 1 + r.IntN(45) {
		h.Passes = append(h.Passes, Pass{Pass: i + 1, Reading: Reading{
			Elapsed: elapsed, RemainingBytes: cur * ps, TransferredBytes: sent, WireRate: rate,
		}})
		sent += cur * ps
		if rate > 0 {
			elapsed += time.Duration(float64(cur*ps) / rate * float64(time.Second))
		} else {
			elapsed += time.Second
		}
		switch r.IntN(4) {
		case 0: // shrink
			cur = cur * int64(10+r.IntN(80)) / 100
		case 1: // noise around the current level
			cur += r.Int64N(cur/5+2) - cur/10 - 1
		case 2: // burst
			cur += r.Int64N(ramPages/10 + 1)
		case 3: // collapse
			cur = r.Int64N(100)
		}
		cur = min(max(cur, 0), ramPages*4096/ps)
	}
	c := fuzzCase{h: h, window: r.IntN(9), minPages: r.Int64N(200) - 20, maxPasses: r.IntN(40) - 2,
		mult: r.Float64() * 5, maxBytes: r.Int64N(4*h.RAMBytes + 1),
		maxTime: time.Duration(r.Int64N(int64(elapsed) + 1)), maxDowntime: time.Duration(r.Int64N(int64(5 * time.Second))),
		onBreach: Action(r.IntN(3))}
	if r.IntN(3) == 0 {
		last := h.Passes[len(h.Passes)-1]
		c.h.Now = Reading{
			Elapsed:          last.Elapsed + time.Duration(r.Int64N(int64(time.Minute))),
			RemainingBytes:   r.Int64N(last.RemainingBytes + 1),
			TransferredBytes: last.TransferredBytes + r.Int64N(last.RemainingBytes+1),
			WireRate:         []float64{0, rate}[r.IntN(2)],
		}
	}
	return c
}

// TestPropertiesRandom checks the invariants of checkCase on plausible
// histories, and what the package comment promises of Smart, worked out
// here independently pass by pass: before the first full window that did
// not cut the set by more than the slack only few-pages stops it; after
// it, Smart stops at the first pass whose count is its window's low or
// whose window never fell, and only there (or by few-pages). Xen stops by
// MaxPasses.
func TestPropertiesRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	n := 3000
	if testing.Short() {
		n = 300
	}
	rules := map[string]int{}
	for range n {
		c := randomHistory(r)
		checkCase(t, c)

		h := c.h // passes numbered 1, 2, ...: index i is pass i+1
		s := Smart{Window: c.window, MinPages: c.minPages}
		w := s.window()
		pages := func(i int) int64 { return h.pages(h.Passes[i].RemainingBytes) }
		want, wantRule := -1, "" // the first index at which Smart must stop, and why
		for i := 1; i < len(h.Passes) && want < 0; i++ {
			if floor := minPages(s.MinPages); floor > 0 && pages(i) < floor {
				want, wantRule = i, RuleFewPages
				break
			}
			if i < w { // the window holds passes 2..i+1: not full yet
				continue
			}
			// 100 ms of the latest measured rate, in whole pages.
			var slack int64
			for k := i; k >= 0; k-- {
				if rate := h.Passes[k].WireRate; rate > 0 {
					slack = int64(rate / 10 / float64(h.pageSize()))
					break
				}
			}
			stalled := false
			for k := w; k <= i; k++ {
				stalled = stalled || pages(k-w+1)-pages(k) <= slack
			}
			low, fell := true, false
			for k := i - w + 1; k < i; k++ {
				low = low && pages(i) <= pages(k)
				fell = fell || pages(k+1) < pages(k)
			}
			switch {
			case stalled && low:
				want, wantRule = i, RuleLocalMinimum
			case !fell:
				want, wantRule = i, RuleNoProgress
			}
		}
		at, d := Replay(s, h)
		rules[d.Rule]++
		if at != want || (want >= 0 && d.Rule != wantRule) {
			t.Fatalf("window %d: stopped at index %d (%s), want index %d by %s\n%+v", w, at, d, want, wantRule, h.Passes)
		}

		x := Xen{MaxPasses: c.maxPasses}
		if limit := c.maxPasses; limit > 0 && len(h.Passes) >= max(limit, 2) {
			if at, d := Replay(x, h); at < 0 || at > max(limit-1, 1) {
				t.Fatalf("xen max %d passes: stopped at index %d (%s)", limit, at, d)
			}
		}
	}
	t.Logf("smart on %d histories: %v", n, rules)
}

// TestFuzzSeedsParse makes sure every testdata file feeds the fuzz corpus.
func TestFuzzSeedsParse(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil || len(files) < 5 {
		t.Fatalf("testdata: %d files, %v", len(files), err)
	}
	for _, name := range files {
		checkCase(t, fuzzCase{h: loadTrace(t, filepath.Base(name))})
	}
}
