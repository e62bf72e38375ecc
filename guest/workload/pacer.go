package workload

import (
	"context"
	"time"
)

// clock is the monotonic time source of the dirtier; tests inject a fake.
type clock interface {
	Now() time.Time
	// Sleep waits for d or until ctx ends, whichever is first.
	Sleep(ctx context.Context, d time.Duration)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Pacing parameters of the dirtier.
const (
	// paceQuantum is the shortest sleep: pages that fall due within it are
	// written as one batch, so the dirtier wakes at most ~500 times a second.
	paceQuantum = 2 * time.Millisecond
	// paceMaxBatch bounds the pages written under one lock hold.
	paceMaxBatch = 1024
	// paceMaxLag bounds the backlog: after a stall longer than this (a paused
	// VM, a verification, a CPU too slow for the target) the older debt is
	// forgiven instead of being paid back in a burst.
	paceMaxLag = 250 * time.Millisecond
)

// pacer decides how many pages are due at a given time for a target rate.
// It is pure: the caller supplies the time and reports what it wrote.
type pacer struct {
	rate     float64 // pages per second, > 0
	quantum  time.Duration
	maxBatch int
	maxLag   time.Duration
	base     time.Time // start of the current accounting period
	done     int64     // pages written since base
}

func newPacer(rate float64, now time.Time) *pacer {
	return &pacer{rate: rate, quantum: paceQuantum, maxBatch: paceMaxBatch, maxLag: paceMaxLag, base: now}
}

// next returns the number of pages to write now (at most maxBatch); when none
// are due it returns 0 and how long to sleep.
func (p *pacer) next(now time.Time) (int, time.Duration) {
	due := p.dueAt(now)
	if lag := int64(p.maxLag.Seconds() * p.rate); due > lag && lag > 0 {
		p.base, p.done = now.Add(-p.maxLag), 0
		due = p.dueAt(now)
	}
	if due > 0 {
		return int(min(due, int64(p.maxBatch))), 0
	}
	nextAt := p.base.Add(time.Duration(float64(p.done+1) / p.rate * float64(time.Second)))
	return 0, max(nextAt.Sub(now), p.quantum)
}

func (p *pacer) dueAt(now time.Time) int64 {
	return int64(now.Sub(p.base).Seconds()*p.rate) - p.done
}

// wrote records n pages written.
func (p *pacer) wrote(n int) { p.done += int64(n) }

// rateMeter measures the achieved rate over windows of about a second.
type rateMeter struct {
	window    time.Duration
	start     time.Time // when counting began
	winStart  time.Time
	winCount  uint64
	achieved  float64
	haveFull  bool
	lastTotal uint64
}

func newRateMeter(now time.Time) *rateMeter {
	return &rateMeter{window: time.Second, start: now, winStart: now}
}

// observe records the running total at now.
func (m *rateMeter) observe(now time.Time, total uint64) {
	m.lastTotal = total
	if el := now.Sub(m.winStart); el >= m.window {
		m.achieved = float64(total-m.winCount) / el.Seconds()
		m.winStart, m.winCount, m.haveFull = now, total, true
	}
}

// rate is the last full window's rate, or the average so far before the
// first window closes.
func (m *rateMeter) rate(now time.Time) float64 {
	if m.haveFull {
		return m.achieved
	}
	el := now.Sub(m.start)
	if el < 100*time.Millisecond {
		return 0
	}
	return float64(m.lastTotal) / el.Seconds()
}
