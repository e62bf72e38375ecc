package pagecodec

import (
	"fmt"
	"io"
	"time"
)

// Effort is how hard the encoder works on a page that no cheap encoding
// (zero, delta, ref, seed) covers.
type Effort int

const (
	// EffortAuto follows the link: it compresses harder while the
	// encoder waits for the tunnel or for QEMU, and less while both wait
	// for it (see pacer). It starts at EffortLZ4.
	EffortAuto Effort = iota
	// EffortFast sends such pages raw: the encoder costs about a copy.
	EffortFast
	// EffortLZ4 compresses them with LZ4.
	EffortLZ4
	// EffortMax compresses every page no delta covers with zstd, as blocks of
	// one frame per stream whose window holds the pages compressed before:
	// what pages share is sent once (a fifth of LZ4's bytes on the lab's
	// text body), at about three times LZ4's CPU.
	EffortMax
)

var effortNames = [...]string{EffortAuto: "auto", EffortFast: "fast", EffortLZ4: "lz4", EffortMax: "max"}

func (e Effort) String() string {
	if e < 0 || int(e) >= len(effortNames) {
		return fmt.Sprintf("Effort(%d)", int(e))
	}
	return effortNames[e]
}

// ParseEffort reads an effort by its name: auto, fast, lz4 or max.
func ParseEffort(s string) (Effort, error) {
	for e, n := range effortNames {
		if n == s {
			return Effort(e), nil
		}
	}
	return 0, fmt.Errorf("codec effort %q: want auto, fast, lz4 or max", s)
}

// Pacing constants. A window is at least paceWindow long and is judged
// every pacePages pages; the encoder steps up a level when it spent more
// than paceUp of the window waiting, and down when it spent less than
// paceDown.
const (
	paceWindow = 100 * time.Millisecond
	pacePages  = 64
	paceUp     = 0.4
	paceDown   = 0.1
)

// pacer chooses the level for EffortAuto. The encoder sits between QEMU
// and the tunnel: time it spends blocked on either is time it could have
// spent compressing at no cost to the migration, and a window in which it
// hardly waited at all means the link and QEMU are waiting for it. The
// level moves one step per window, so a level the encoder cannot sustain
// alternates with the one below it, in the proportion the link allows.
type pacer struct {
	level  Effort // EffortFast..EffortMax
	start  time.Time
	waited time.Duration // blocked reading or writing, this window
	pages  int
	// spent is the wall time at each level.
	spent [EffortMax + 1]time.Duration
}

func newPacer(now time.Time) *pacer { return &pacer{level: EffortLZ4, start: now} }

// page counts a page and, every pacePages pages, closes the window if it
// is long enough.
func (p *pacer) page(now func() time.Time) {
	p.pages++
	if p.pages < pacePages {
		return
	}
	p.pages = 0
	if t := now(); t.Sub(p.start) >= paceWindow {
		p.judge(t)
	}
}

// judge closes the window at t and moves the level.
func (p *pacer) judge(t time.Time) {
	wall := t.Sub(p.start)
	if wall <= 0 {
		return
	}
	p.spent[p.level] += wall
	slack := float64(p.waited) / float64(wall)
	switch {
	case slack > paceUp && p.level < EffortMax:
		p.level++
	case slack < paceDown && p.level > EffortFast:
		p.level--
	}
	p.start, p.waited = t, 0
}

// spentBy is the wall time at each level up to t, the open window
// included.
func (p *pacer) spentBy(t time.Time) [EffortMax + 1]time.Duration {
	s := p.spent
	if d := t.Sub(p.start); d > 0 {
		s[p.level] += d
	}
	return s
}

// waitReader and waitWriter add the time their calls block to a pacer.
type waitReader struct {
	r io.Reader
	p *pacer
}

func (w waitReader) Read(b []byte) (int, error) {
	defer w.p.waitedSince(time.Now())
	return w.r.Read(b)
}

type waitWriter struct {
	w io.Writer
	p *pacer
}

func (w waitWriter) Write(b []byte) (int, error) {
	defer w.p.waitedSince(time.Now())
	return w.w.Write(b)
}

func (p *pacer) waitedSince(t time.Time) { p.waited += time.Since(t) }
