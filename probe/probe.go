// Package probe measures the downtime a client of the guest sees during a
// migration, beside the figure QEMU reports (which is the source's view).
//
// A prober sends a small request to the guest at a fixed interval, from
// where a client would be (the lab's bridge), without waiting for earlier
// requests to finish: a request sent while the guest is paused completes
// once it runs again. The observed downtime is the longest gap between two
// consecutive answers, by the time each answer arrived.
//
//	t ─┬──┬──┬──┬──┬──┬──┬──┬──┬──┬──┬──▶  a request every Interval
//	   ✓  ✓  ✓  ·  ·  ·  ·  ✓  ✓  ✓  ✓     answers (· = waiting)
//	         └── longest gap ──┘
package probe

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Defaults for Config.
const (
	DefaultInterval    = 10 * time.Millisecond
	DefaultTimeout     = 5 * time.Second
	DefaultMaxInFlight = 256
)

// Config says how to probe.
type Config struct {
	// Send makes one request and returns nil when the guest answered.
	Send        func(ctx context.Context) error
	Interval    time.Duration
	Timeout     time.Duration // for one request
	MaxInFlight int           // requests waiting at once; beyond it a tick is skipped
}

// Result is what one probing period saw.
type Result struct {
	Sent     int           `json:"sent"`
	Answered int           `json:"answered"`
	Failed   int           `json:"failed"`  // errors and time-outs
	Skipped  int           `json:"skipped"` // ticks with MaxInFlight requests waiting
	MaxGap   time.Duration `json:"-"`
	MaxGapMS int64         `json:"max_gap_ms"`
	// GapFrom and GapTo bound the longest gap, from the start of probing.
	GapFromMS int64 `json:"gap_from_ms"`
	GapToMS   int64 `json:"gap_to_ms"`
}

// Prober runs until Stop.
type Prober struct {
	cfg     Config
	start   time.Time
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	answers []time.Duration // arrival times of answers, from start
	res     Result
}

// Start begins probing in the background. Its goroutines end when Stop
// returns.
func Start(ctx context.Context, cfg Config) *Prober {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	ctx, cancel := context.WithCancel(ctx)
	p := &Prober{cfg: cfg, start: time.Now(), cancel: cancel, done: make(chan struct{})}
	go p.loop(ctx)
	return p
}

func (p *Prober) loop(ctx context.Context) {
	defer close(p.done)
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, p.cfg.MaxInFlight)
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case slots <- struct{}{}:
		default:
			p.mu.Lock()
			p.res.Skipped++
			p.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			continue
		}
		p.mu.Lock()
		p.res.Sent++
		p.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			rctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
			err := p.cfg.Send(rctx)
			cancel()
			at := time.Since(p.start)
			p.mu.Lock()
			defer p.mu.Unlock()
			switch {
			case err == nil:
				p.res.Answered++
				p.answers = append(p.answers, at)
			case ctx.Err() == nil:
				p.res.Failed++
			}
		}()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// AnsweredSince reports whether an answer arrived after t.
func (p *Prober) AnsweredSince(t time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.answers) > 0 && p.start.Add(p.answers[len(p.answers)-1]).After(t)
}

// WaitAnswer waits until an answer arrives after t, or ctx ends.
func (p *Prober) WaitAnswer(ctx context.Context, t time.Time) bool {
	tick := time.NewTicker(p.cfg.Interval)
	defer tick.Stop()
	for !p.AnsweredSince(t) {
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
	return true
}

// Stop ends probing, waits for requests under way, and returns the result.
func (p *Prober) Stop() Result {
	p.cancel()
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return Gaps(p.answers, p.res)
}

// Gaps fills r's longest gap from the arrival times of answers.
func Gaps(answers []time.Duration, r Result) Result {
	a := append([]time.Duration(nil), answers...)
	sort.Slice(a, func(i, j int) bool { return a[i] < a[j] })
	for i := 1; i < len(a); i++ {
		if g := a[i] - a[i-1]; g > r.MaxGap {
			r.MaxGap, r.GapFromMS, r.GapToMS = g, a[i-1].Milliseconds(), a[i].Milliseconds()
		}
	}
	r.MaxGapMS = r.MaxGap.Milliseconds()
	return r
}
