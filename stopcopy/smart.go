package stopcopy

import (
	"fmt"
	"math"
	"time"
)

// Smart is CloudNet's Smart Stop and Copy: once a window of passes as a
// whole has stopped shrinking the dirty set, stop at the first pass whose
// count is the low of its window, or when every pass of a window dirtied at
// least as much as it sent. The package comment defines the rules exactly.
type Smart struct {
	// Window is the number of passes (from pass 2 on) judged together:
	// 0 means DefaultWindow, 1 is taken as 2 (the least that can show a
	// pass that did not shrink).
	Window int
	// MinPages stops at once when fewer pages remain: 0 means
	// DefaultMinPages, 1 stops only when nothing remains, negative never.
	MinPages int64
	// Slack is the least cut in the expected pause for which a window
	// counts as shrinking the set: 0 means DefaultSlack, negative none.
	Slack time.Duration
}

// Name returns "smart".
func (Smart) Name() string { return "smart" }

func (s Smart) window() int {
	switch {
	case s.Window <= 0:
		return DefaultWindow
	case s.Window == 1:
		return 2
	}
	return s.Window
}

func minPages(v int64) int64 {
	if v == 0 {
		return DefaultMinPages
	}
	return v
}

// slackPages is Slack in pages at the wire rate measured at the latest pass
// (0 if none was measured), at most math.MaxInt64/2.
func (s Smart) slackPages(h History) int64 {
	d := s.Slack
	if d == 0 {
		d = DefaultSlack
	}
	rate := 0.0
	for i := len(h.Passes) - 1; i >= 0; i-- {
		if r := h.Passes[i].WireRate; r > 0 {
			rate = r
			break
		}
	}
	if d < 0 || !(rate > 0) {
		return 0
	}
	p := rate * d.Seconds() / float64(h.pageSize())
	if !(p < math.MaxInt64/2) {
		return math.MaxInt64 / 2
	}
	return int64(p)
}

// Decide applies the rules in the package comment to the passes numbered 2
// or more.
func (s Smart) Decide(h History) Decision {
	if d, ok := firstPass(h); ok {
		return d
	}
	// r[i] is the remaining pages at pass num[i]: the passes numbered 2
	// or more, oldest first.
	var (
		r   []int64
		num []int
	)
	for _, p := range h.Passes {
		if p.Pass >= 2 {
			r = append(r, h.pages(p.RemainingBytes))
			num = append(num, p.Pass)
		}
	}
	n, w := len(r), s.window()
	cur := r[n-1]

	if floor := minPages(s.MinPages); floor > 0 && cur < floor {
		return Decision{StopAndCopy, RuleFewPages,
			fmt.Sprintf("pass %d: %d pages remain, fewer than %d", num[n-1], cur, floor)}
	}
	if n < w {
		return Decision{Continue, RuleFilling,
			fmt.Sprintf("pass %d: %d pages remain; %d of the %d passes of a window measured", num[n-1], cur, n, w)}
	}
	first := n - w // the window is r[first:]
	// q: the end of the first window that did not cut the set by more
	// than the slack.
	slack := s.slackPages(h)
	q := -1
	for k := w - 1; k < n; k++ {
		if !shrank(r[k-w+1], r[k], slack) {
			q = k
			break
		}
	}
	if q < 0 {
		return Decision{Continue, RuleShrinking,
			fmt.Sprintf("pass %d: %d pages remain; every window so far cut the set by more than %d pages (this one from %d at pass %d)",
				num[n-1], cur, slack, r[first], num[first])}
	}
	stalled := fmt.Sprintf("passes %d-%d did not shrink the set (%d to %d pages)", num[q-w+1], num[q], r[q-w+1], r[q])
	if slack > 0 {
		stalled = fmt.Sprintf("passes %d-%d did not cut the set by more than %d pages (%d to %d)",
			num[q-w+1], num[q], slack, r[q-w+1], r[q])
	}
	low := first // the window's low, earliest if tied
	for k := first + 1; k < n; k++ {
		if r[k] < r[low] {
			low = k
		}
	}
	if cur <= r[low] {
		return Decision{StopAndCopy, RuleLocalMinimum,
			fmt.Sprintf("pass %d: %d pages remain, the lowest of the last %d passes; %s", num[n-1], cur, w, stalled)}
	}
	if noneFell(r[first:]) {
		return Decision{StopAndCopy, RuleNoProgress,
			fmt.Sprintf("pass %d: %d pages remain; no pass since pass %d (%d pages) sent more pages than it dirtied",
				num[n-1], cur, num[first], r[first])}
	}
	return Decision{Continue, RuleWaiting,
		fmt.Sprintf("pass %d: %d pages remain, above the low of %d at pass %d; %s", num[n-1], cur, r[low], num[low], stalled)}
}

// shrank reports whether to is lower than from by more than slack pages
// (slack >= 0), without overflow.
func shrank(from, to, slack int64) bool {
	if to >= from {
		return false
	}
	return uint64(from-to) > uint64(slack)
}

// noneFell reports whether no count in v is lower than the one before it.
func noneFell(v []int64) bool {
	for k := 1; k < len(v); k++ {
		if v[k] < v[k-1] {
			return false
		}
	}
	return true
}

func passes(n int) string {
	if n == 1 {
		return "1 pass"
	}
	return fmt.Sprintf("%d passes", n)
}
