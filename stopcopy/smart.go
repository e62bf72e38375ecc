package stopcopy

import "fmt"

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
	// q: the end of the first window whose passes together dirtied at
	// least as many pages as they sent.
	q := -1
	for k := w - 1; k < n; k++ {
		if r[k] >= r[k-w+1] {
			q = k
			break
		}
	}
	if q < 0 {
		return Decision{Continue, RuleShrinking,
			fmt.Sprintf("pass %d: %d pages remain, down from %d at pass %d: the %s between sent more than they dirtied",
				num[n-1], cur, r[first], num[first], passes(w-1))}
	}
	stalled := fmt.Sprintf("the dirty set stopped shrinking at pass %d (%d pages, %d at pass %d)",
		num[q], r[q], r[q-w+1], num[q-w+1])
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
