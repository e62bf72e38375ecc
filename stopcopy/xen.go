package stopcopy

import "fmt"

// Xen is classic Xen's rule (xc_domain_save.c): stop after MaxPasses passes,
// after sending more than MaxRAMMultiple times RAM, or when fewer than
// MinPages pages remain. Zero fields take the defaults; a negative field
// disables its rule.
type Xen struct {
	MaxPasses      int     // 0 means DefaultMaxPasses (30)
	MaxRAMMultiple float64 // 0 means DefaultMaxRAMMultiple (3)
	MinPages       int64   // 0 means DefaultMinPages (50)
}

// Name returns "xen".
func (Xen) Name() string { return "xen" }

// Decide applies few-pages, max-passes and max-ram-multiple, in that order.
func (x Xen) Decide(h History) Decision {
	if d, ok := firstPass(h); ok {
		return d
	}
	p, _ := h.last()
	cur := h.pages(p.RemainingBytes)
	if floor := minPages(x.MinPages); floor > 0 && cur < floor {
		return Decision{StopAndCopy, RuleFewPages,
			fmt.Sprintf("pass %d: %d pages remain, fewer than %d", p.Pass, cur, floor)}
	}
	maxPasses := x.MaxPasses
	if maxPasses == 0 {
		maxPasses = DefaultMaxPasses
	}
	if maxPasses > 0 && p.Pass >= maxPasses {
		return Decision{StopAndCopy, RuleMaxPasses,
			fmt.Sprintf("pass %d reached the limit of %d passes", p.Pass, maxPasses)}
	}
	mult := x.MaxRAMMultiple
	if mult == 0 {
		mult = DefaultMaxRAMMultiple
	}
	sent := fmt.Sprintf("%s sent", mib(p.TransferredBytes))
	if h.RAMBytes > 0 && mult > 0 {
		ratio := float64(p.TransferredBytes) / float64(h.RAMBytes)
		if ratio > mult {
			return Decision{StopAndCopy, RuleMaxRAMMultiple,
				fmt.Sprintf("pass %d: %s, %.2f times RAM, over the limit of %g", p.Pass, sent, ratio, mult)}
		}
		sent = fmt.Sprintf("%s, %.2f times RAM", sent, ratio)
	}
	return Decision{Continue, RuleUnderLimits,
		fmt.Sprintf("pass %d: %d pages remain, %s", p.Pass, cur, sent)}
}
