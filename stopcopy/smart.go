package stopcopy

import "fmt"

// Smart is CloudNet's Smart Stop and Copy: stop at a low point of the
// remaining pages within a window of passes, once the dirty set has stopped
// shrinking. The package comment defines the rules exactly.
type Smart struct {
	// Window is the number of recent passes (from pass 2 on) looked at:
	// 0 means DefaultWindow, 1 is taken as 2 (the least that can show a
	// pass that did not shrink).
	Window int
	// MinPages stops at once when fewer pages remain: 0 means
	// DefaultMinPages, 1 stops only when nothing remains, negative never.
	MinPages int64
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

// Decide applies the rules in the package comment to the last Window passes
// numbered 2 or more.
func (s Smart) Decide(h History) Decision {
	if d, ok := firstPass(h); ok {
		return d
	}
	w := s.window()
	// The window: indices into h.Passes of the last w passes numbered >= 2.
	win := make([]int, 0, min(w, len(h.Passes)))
	for i := len(h.Passes) - 1; i >= 0 && len(win) < w; i-- {
		if h.Passes[i].Pass >= 2 {
			win = append(win, i)
		}
	}
	for i, j := 0, len(win)-1; i < j; i, j = i+1, j-1 {
		win[i], win[j] = win[j], win[i]
	}
	r := func(k int) int64 { return h.pages(h.Passes[win[k]].RemainingBytes) }
	num := func(k int) int { return h.Passes[win[k]].Pass }
	n := len(win)
	cur := r(n - 1)

	if floor := minPages(s.MinPages); floor > 0 && cur < floor {
		return Decision{StopAndCopy, RuleFewPages,
			fmt.Sprintf("pass %d: %d pages remain, fewer than %d", num(n-1), cur, floor)}
	}

	rise := -1 // the latest pass in the window that did not shrink
	low := 0   // the window's lowest count, earliest if tied
	for k := 1; k < n; k++ {
		if r(k) >= r(k-1) {
			rise = k
		}
		if r(k) < r(low) {
			low = k
		}
	}
	if rise < 0 {
		if n == 1 {
			return Decision{Continue, RuleShrinking,
				fmt.Sprintf("pass %d: first measure of the dirty set, %d pages", num(0), cur)}
		}
		return Decision{Continue, RuleShrinking,
			fmt.Sprintf("pass %d: %d pages remain, down from %d at pass %d", num(n-1), cur, r(n-2), num(n-2))}
	}
	stalled := fmt.Sprintf("pass %d dirtied at least as many pages as it sent (%d then %d remaining)",
		num(rise-1), r(rise-1), r(rise))
	if cur <= r(low) {
		return Decision{StopAndCopy, RuleLocalMinimum,
			fmt.Sprintf("pass %d: %d pages remain, the lowest of the last %d passes, and %s", num(n-1), cur, n, stalled)}
	}
	if n == w && uniqueLow(r, n) {
		return Decision{StopAndCopy, RuleNoProgress,
			fmt.Sprintf("pass %d: %d pages remain; the low of %d pages at pass %d has not come back in the %s since",
				num(n-1), cur, r(0), num(0), passes(w-1))}
	}
	return Decision{Continue, RuleWaiting,
		fmt.Sprintf("pass %d: %d pages remain, above the low of %d at pass %d; %s", num(n-1), cur, r(low), num(low), stalled)}
}

// uniqueLow reports whether r(0) is strictly lower than every later count.
func uniqueLow(r func(int) int64, n int) bool {
	for k := 1; k < n; k++ {
		if r(k) <= r(0) {
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
