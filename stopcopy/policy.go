package stopcopy

import (
	"fmt"
	"math"
	"time"
)

// Defaults of the policies' zero fields.
const (
	DefaultWindow         = 5    // CloudNet's best window, in passes
	DefaultMinPages       = 50   // Xen's "fewer than 50 pages" (xc_domain_save.c)
	DefaultMaxPasses      = 30   // Xen's DEF_MAX_ITERS 29 live passes + the paused one
	DefaultMaxRAMMultiple = 3.0  // Xen's DEF_MAX_FACTOR
	DefaultPageSize       = 4096 // QEMU's TARGET_PAGE_SIZE on x86, reported as ram.page-size

	// DefaultSlack is Smart's Slack: QEMU acts on a forced stop at its
	// next check of the rate and threshold, at most BUFFER_DELAY (100 ms,
	// migration/migration.c) later.
	DefaultSlack = 100 * time.Millisecond
)

// Rule identifiers, the Decision.Rule values. Stops first, then the reasons
// to continue.
const (
	RuleLocalMinimum   = "local-minimum"    // Smart: the set stopped shrinking, and the current count is the window's low
	RuleNoProgress     = "no-progress"      // Smart: every pass of the window dirtied at least as much as it sent
	RuleFewPages       = "few-pages"        // Smart, Xen: fewer than MinPages remain
	RuleMaxPasses      = "max-passes"       // Xen
	RuleMaxRAMMultiple = "max-ram-multiple" // Xen
	RuleBudgetTime     = "budget-time"      // Budget: MaxTime reached
	RuleBudgetBytes    = "budget-bytes"     // Budget: MaxBytes reached
	RuleBudgetDowntime = "budget-downtime"  // Budget: a stop would exceed MaxDowntime

	RuleFirstPass   = "first-pass"      // no dirty set measured yet
	RuleFilling     = "filling-window"  // Smart: fewer passes than a window
	RuleShrinking   = "shrinking"       // Smart: every window so far shrank the set as a whole
	RuleWaiting     = "waiting-minimum" // Smart: shrinking stopped, waiting for a low
	RuleUnderLimits = "under-limits"    // Xen: no limit reached
	RuleQEMU        = "qemu"            // QEMU decides by its downtime limit
)

// Reading is one sample of the source's RAM migration counters
// (query-migrate "ram") and of our link.
type Reading struct {
	Elapsed          time.Duration // since the migrate command
	RemainingBytes   int64         // ram.remaining: dirty bytes not yet sent
	TransferredBytes int64         // ram.transferred: bytes sent so far, cumulative
	WireRate         float64       // bytes/s over the link, from our counters; 0 if unknown
}

// Pass is the reading taken right after a MIGRATION_PASS event, which QEMU
// emits when it syncs the dirty bitmap. RemainingBytes is then the dirty set
// this pass must send.
type Pass struct {
	Pass int // the event's pass number, counted from 1 as QEMU does
	Reading
}

// History is what a Policy decides on: the passes so far, oldest first, the
// last one being the pass just announced, and optionally a newer reading.
type History struct {
	RAMBytes int64 // ram.total; 0 if unknown
	PageSize int64 // ram.page-size; 0 means DefaultPageSize
	Passes   []Pass

	// Now is a reading taken after the last pass began, for decisions made
	// between MIGRATION_PASS events (the driver's progress timer). Only
	// Budget looks at it. The zero value means "none".
	Now Reading
}

// Action is what the driver should do next.
type Action int

// Actions.
const (
	Continue    Action = iota // run the announced pass live
	StopAndCopy               // pause the VM and send the rest
	Abort                     // cancel; the VM keeps running on the source
)

func (a Action) String() string {
	switch a {
	case Continue:
		return "continue"
	case StopAndCopy:
		return "stop-and-copy"
	case Abort:
		return "abort"
	}
	return fmt.Sprintf("action(%d)", int(a))
}

// Decision is a policy's answer. Rule is a stable machine identifier (the
// Rule* constants); Reason is a sentence for people, with the numbers.
type Decision struct {
	Action Action
	Rule   string
	Reason string
}

func (d Decision) String() string {
	return fmt.Sprintf("%s (%s): %s", d.Action, d.Rule, d.Reason)
}

// Policy decides, from the history of a pre-copy, whether to run the
// announced pass live. Decide must be a pure function of h: no clock, no
// state kept between calls, h left unchanged.
type Policy interface {
	Name() string
	Decide(h History) Decision
}

// Parse returns the policy named smart, xen or qemu, with defaults. window is
// Smart's window in passes: 0 for DefaultWindow, else at least 2. The other
// policies ignore it.
func Parse(name string, window int) (Policy, error) {
	switch name {
	case "smart":
		if window < 0 || window == 1 {
			return nil, fmt.Errorf("stopcopy: smart window %d: want 0 (default %d) or at least 2 passes", window, DefaultWindow)
		}
		return Smart{Window: window}, nil
	case "xen":
		return Xen{}, nil
	case "qemu":
		return QEMU{}, nil
	}
	return nil, fmt.Errorf("stopcopy: unknown policy %q (want smart, xen or qemu)", name)
}

// ExpectedDowntime is how long sending remainingBytes takes at rate bytes/s:
// the pause a stop now would cost, device state aside. ok is false if the
// rate is unknown (zero, negative or NaN). The result saturates at the
// largest Duration.
func ExpectedDowntime(remainingBytes int64, rate float64) (d time.Duration, ok bool) {
	if !(rate > 0) {
		return 0, false
	}
	if remainingBytes <= 0 {
		return 0, true
	}
	ns := float64(remainingBytes) / rate * float64(time.Second)
	if ns >= math.MaxInt64 {
		return time.Duration(math.MaxInt64), true
	}
	return time.Duration(ns), true
}

// Replay runs p as the driver would have at each MIGRATION_PASS of a recorded
// history: on each prefix of h.Passes, without h.Now. It returns the index in
// h.Passes of the first pass at which p did not continue, and that decision;
// or -1 and the decision on the whole history if p continued throughout.
func Replay(p Policy, h History) (int, Decision) {
	passes := h.Passes
	h.Now = Reading{}
	if len(passes) == 0 {
		h.Passes = nil
		return -1, p.Decide(h)
	}
	var d Decision
	for i := range passes {
		h.Passes = passes[: i+1 : i+1]
		d = p.Decide(h)
		if d.Action != Continue {
			return i, d
		}
	}
	return -1, d
}

func (h History) pageSize() int64 {
	if h.PageSize > 0 {
		return h.PageSize
	}
	return DefaultPageSize
}

// pages converts bytes to pages, rounding a partial page up.
func (h History) pages(b int64) int64 {
	ps := h.pageSize()
	n := b / ps
	if b > 0 && b%ps != 0 {
		n++
	}
	return n
}

// last is the pass just announced.
func (h History) last() (Pass, bool) {
	if len(h.Passes) == 0 {
		return Pass{}, false
	}
	return h.Passes[len(h.Passes)-1], true
}

// latest is the newest reading: Now if set, else the last pass.
func (h History) latest() (Reading, bool) {
	if h.Now != (Reading{}) {
		return h.Now, true
	}
	p, ok := h.last()
	return p.Reading, ok
}

// wireRate is the most recent measured wire rate, 0 if none.
func (h History) wireRate() float64 {
	if h.Now.WireRate > 0 {
		return h.Now.WireRate
	}
	for i := len(h.Passes) - 1; i >= 0; i-- {
		if r := h.Passes[i].WireRate; r > 0 {
			return r
		}
	}
	return 0
}

// firstPass is the decision before any dirty set has been measured.
func firstPass(h History) (Decision, bool) {
	p, ok := h.last()
	if !ok {
		return Decision{Continue, RuleFirstPass, "no pass yet"}, true
	}
	if p.Pass < 2 {
		return Decision{Continue, RuleFirstPass, fmt.Sprintf("pass %d copies all of RAM; the dirty set is measured from pass 2", p.Pass)}, true
	}
	return Decision{}, false
}

func mib(b int64) string {
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}
