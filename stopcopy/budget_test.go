package stopcopy

import (
	"testing"
	"time"
)

// fixed is a Policy that always gives the same decision.
type fixed Decision

func (fixed) Name() string              { return "fixed" }
func (f fixed) Decide(History) Decision { return Decision(f) }

func TestBudget(t *testing.T) {
	stop := fixed{StopAndCopy, "inner-stop", "inner says stop"}
	abort := fixed{Abort, "inner-abort", "inner says abort"}
	cont := fixed{Continue, "inner-continue", "inner says continue"}

	// Pass 3 at 30 s with 40 MB to send at 10 MB/s: 4 s of downtime.
	at := func(now Reading) History {
		return History{RAMBytes: 1 << 30, PageSize: 4096, Now: now, Passes: []Pass{
			{1, Reading{Elapsed: 100 * time.Millisecond, RemainingBytes: 1 << 30, WireRate: 0}},
			{2, Reading{Elapsed: 20 * time.Second, RemainingBytes: 100e6, TransferredBytes: 200e6, WireRate: 10e6}},
			{3, Reading{Elapsed: 30 * time.Second, RemainingBytes: 40e6, TransferredBytes: 300e6, WireRate: 10e6}},
		}}
	}
	h := at(Reading{})
	tests := []struct {
		name   string
		b      Budget
		h      History
		action Action
		rule   string
	}{
		{"no limits", Budget{Inner: cont}, h, Continue, "inner-continue"},
		{"under the time limit", Budget{Inner: cont, MaxTime: time.Minute, OnBreach: StopAndCopy}, h, Continue, "inner-continue"},
		{"time reached, stop", Budget{Inner: cont, MaxTime: 30 * time.Second, OnBreach: StopAndCopy}, h, StopAndCopy, RuleBudgetTime},
		{"time reached, abort", Budget{Inner: cont, MaxTime: 30 * time.Second, OnBreach: Abort}, h, Abort, RuleBudgetTime},
		{"time reached, zero OnBreach is abort", Budget{Inner: cont, MaxTime: time.Second}, h, Abort, RuleBudgetTime},
		{"time reached, bad OnBreach is abort", Budget{Inner: cont, MaxTime: time.Second, OnBreach: Action(9)}, h, Abort, RuleBudgetTime},
		{"time reached overrides an inner stop", Budget{Inner: stop, MaxTime: time.Second, OnBreach: Abort}, h, Abort, RuleBudgetTime},
		{"bytes reached", Budget{Inner: cont, MaxBytes: 300e6, OnBreach: StopAndCopy}, h, StopAndCopy, RuleBudgetBytes},
		{"bytes under", Budget{Inner: cont, MaxBytes: 300e6 + 1, OnBreach: StopAndCopy}, h, Continue, "inner-continue"},

		// Between passes: the timer's reading counts.
		{"time reached between passes", Budget{Inner: cont, MaxTime: 40 * time.Second, OnBreach: StopAndCopy},
			at(Reading{Elapsed: 41 * time.Second, RemainingBytes: 1e6, TransferredBytes: 340e6, WireRate: 10e6}), StopAndCopy, RuleBudgetTime},
		{"bytes reached between passes", Budget{Inner: cont, MaxBytes: 320e6, OnBreach: Abort},
			at(Reading{Elapsed: 31 * time.Second, RemainingBytes: 30e6, TransferredBytes: 320e6}), Abort, RuleBudgetBytes},

		// MaxDowntime vetoes stops, not continues.
		{"inner stop within downtime", Budget{Inner: stop, MaxDowntime: 4 * time.Second}, h, StopAndCopy, "inner-stop"},
		{"inner stop over downtime", Budget{Inner: stop, MaxDowntime: 3 * time.Second}, h, Abort, RuleBudgetDowntime},
		{"continue over downtime is fine", Budget{Inner: cont, MaxDowntime: time.Millisecond}, h, Continue, "inner-continue"},
		{"forced stop over downtime", Budget{Inner: cont, MaxTime: time.Second, OnBreach: StopAndCopy, MaxDowntime: time.Second}, h, Abort, RuleBudgetDowntime},
		{"inner abort passes", Budget{Inner: abort, MaxDowntime: time.Second}, h, Abort, "inner-abort"},
		// Between passes a stop sends what is left of this pass plus what
		// was dirtied since the sync: at least the last pass's 40 MB.
		{"downtime between passes uses the larger count", Budget{Inner: cont, MaxTime: 31 * time.Second, OnBreach: StopAndCopy, MaxDowntime: 2 * time.Second},
			at(Reading{Elapsed: 32 * time.Second, RemainingBytes: 1e6, TransferredBytes: 339e6, WireRate: 10e6}), Abort, RuleBudgetDowntime},
		{"no measured rate skips the downtime check", Budget{Inner: stop, MaxDowntime: time.Millisecond},
			History{Passes: []Pass{{2, Reading{Elapsed: time.Second, RemainingBytes: 1e9}}}}, StopAndCopy, "inner-stop"},
		{"older measured rate counts", Budget{Inner: stop, MaxDowntime: time.Second},
			History{Passes: []Pass{{2, Reading{RemainingBytes: 1e9, WireRate: 1e6}}, {3, Reading{RemainingBytes: 1e9}}}}, Abort, RuleBudgetDowntime},

		{"nil inner is qemu", Budget{MaxTime: time.Hour}, h, Continue, RuleQEMU},
		{"empty history", Budget{Inner: Smart{}, MaxTime: time.Nanosecond}, History{}, Continue, RuleFirstPass},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.b.Decide(tt.h)
			if d.Action != tt.action || d.Rule != tt.rule {
				t.Errorf("got %s, want %s (%s)", d, tt.action, tt.rule)
			}
			if d.Reason == "" {
				t.Error("no reason")
			}
			t.Log(d)
		})
	}
}

func TestBudgetName(t *testing.T) {
	if got := (Budget{Inner: Smart{}}).Name(); got != "smart+budget" {
		t.Errorf("Name() = %q", got)
	}
	if got := (Budget{}).Name(); got != "qemu+budget" {
		t.Errorf("Name() = %q", got)
	}
}
