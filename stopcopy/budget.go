package stopcopy

import (
	"fmt"
	"time"
)

// Budget guards any policy with limits on the whole migration; the package
// comment gives the rules. Zero limits are off. A nil Inner is QEMU{}.
type Budget struct {
	Inner       Policy
	MaxTime     time.Duration // elapsed since the migrate command
	MaxBytes    int64         // ram.transferred
	MaxDowntime time.Duration // the pause a stop may cost, at the measured wire rate
	OnBreach    Action        // StopAndCopy or Abort; anything else is Abort
}

// Name is the inner policy's name followed by "+budget".
func (b Budget) Name() string {
	if b.Inner == nil {
		return QEMU{}.Name() + "+budget"
	}
	return b.Inner.Name() + "+budget"
}

// Decide checks MaxTime and MaxBytes, else asks Inner; then vetoes a
// StopAndCopy whose expected downtime exceeds MaxDowntime.
func (b Budget) Decide(h History) Decision {
	d := b.spent(h)
	if d.Rule == "" {
		inner := b.Inner
		if inner == nil {
			inner = QEMU{}
		}
		d = inner.Decide(h)
	}
	if d.Action != StopAndCopy || b.MaxDowntime <= 0 {
		return d
	}
	rest := b.rest(h)
	rate := h.wireRate()
	dt, ok := ExpectedDowntime(rest, rate)
	if !ok || dt <= b.MaxDowntime {
		return d
	}
	return Decision{Abort, RuleBudgetDowntime,
		fmt.Sprintf("stopping now (%s: %s) would pause the VM for about %s to send %s at %.1f MiB/s, over the %s downtime limit",
			d.Rule, d.Reason, dt.Round(time.Millisecond), mib(rest), rate/(1<<20), b.MaxDowntime)}
}

// spent is the OnBreach decision if MaxTime or MaxBytes is reached, else the
// zero Decision.
func (b Budget) spent(h History) Decision {
	now, ok := h.latest()
	if !ok {
		return Decision{}
	}
	act := Abort
	if b.OnBreach == StopAndCopy {
		act = StopAndCopy
	}
	if b.MaxTime > 0 && now.Elapsed >= b.MaxTime {
		return Decision{act, RuleBudgetTime,
			fmt.Sprintf("%s elapsed, the time budget is %s", now.Elapsed.Round(time.Millisecond), b.MaxTime)}
	}
	if b.MaxBytes > 0 && now.TransferredBytes >= b.MaxBytes {
		return Decision{act, RuleBudgetBytes,
			fmt.Sprintf("%s sent, the byte budget is %s", mib(now.TransferredBytes), mib(b.MaxBytes))}
	}
	return Decision{}
}

// rest is what a stop now would send: at a pass, its dirty set; between
// passes, the larger of what is left of the current pass and the dirty set
// of the last pass, since the final sync adds the pages dirtied meanwhile.
func (b Budget) rest(h History) int64 {
	p, ok := h.last()
	if h.Now == (Reading{}) {
		return p.RemainingBytes
	}
	if !ok {
		return h.Now.RemainingBytes
	}
	return max(h.Now.RemainingBytes, p.RemainingBytes)
}
