package stopcopy

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

// Synthetic traces: a 512 MiB VM of 4 KiB pages over a 100 Mbit/s link.
const (
	testPage     = 4096
	testRAMPages = 131072
	testRate     = 12.5e6 // bytes/s
)

// trace builds a history from the remaining pages at passes 1, 2, ...: each
// pass sends its whole dirty set at testRate, so the transferred bytes and
// the elapsed time at each pass follow from the counts before it.
func trace(pages ...int64) History {
	h := History{RAMBytes: testRAMPages * testPage, PageSize: testPage}
	var sent int64
	for i, p := range pages {
		h.Passes = append(h.Passes, Pass{Pass: i + 1, Reading: Reading{
			Elapsed:          100*time.Millisecond + time.Duration(float64(sent)/testRate*float64(time.Second)),
			RemainingBytes:   p * testPage,
			TransferredBytes: sent,
			WireRate:         testRate,
		}})
		sent += p * testPage
	}
	return h
}

// series is head followed by repeat, cycled, up to n counts.
func series(n int, head []int64, repeat ...int64) []int64 {
	out := append([]int64(nil), head...)
	for i := 0; len(out) < n; i++ {
		out = append(out, repeat[i%len(repeat)])
	}
	return out
}

// rising is a dirty set that grows by 2000 pages a pass: the VM dirties
// faster than the link sends.
func rising(n int) []int64 {
	out := []int64{testRAMPages}
	for v := int64(10000); len(out) < n; v += 2000 {
		out = append(out, v)
	}
	return out
}

var synthetic = map[string]History{
	"monotone-to-zero":       trace(testRAMPages, 20000, 8000, 3000, 1000, 300, 80, 20, 0),
	"plateau":                trace(series(40, []int64{testRAMPages, 20000, 9000, 6000}, 5000)...),
	"oscillation":            trace(series(40, []int64{testRAMPages, 20000, 6000, 4000, 4500, 4200, 4400, 4100}, 4600, 4300, 4450, 4150)...),
	"oscillation-new-low":    trace(testRAMPages, 20000, 6000, 4000, 4500, 3900, 4300, 4100),
	"dirties-more-than-sent": trace(testRAMPages, 20000, 6000, 9000, 4000, 1500, 400, 30),
	"rising":                 trace(rising(20)...),
	"huge-ram-multiple":      trace(testRAMPages, 120000, 125000, 118000, 122000, 119000, 121000),
	"few-pages":              trace(testRAMPages, 40),
	"first-pass-only":        trace(testRAMPages),
	"empty":                  {RAMBytes: testRAMPages * testPage},
}

// TestSyntheticTraces replays each policy over each synthetic trace as the
// driver would, pass by pass, and checks the pass it stops at (0: never) and
// the rule.
func TestSyntheticTraces(t *testing.T) {
	smart, xen := Smart{}, Xen{}
	tests := []struct {
		trace  string
		policy Policy
		pass   int
		rule   string
	}{
		{"monotone-to-zero", smart, 8, RuleFewPages},
		{"monotone-to-zero", xen, 8, RuleFewPages},
		{"monotone-to-zero", Smart{MinPages: 1}, 9, RuleFewPages},
		{"monotone-to-zero", Smart{MinPages: -1}, 0, RuleShrinking},
		{"monotone-to-zero", Xen{MinPages: -1}, 0, RuleUnderLimits},

		// 5000, 5000: the pass dirtied as much as it sent, and the count is
		// the window's low.
		{"plateau", smart, 6, RuleLocalMinimum},
		{"plateau", Smart{Window: 2}, 6, RuleLocalMinimum},
		{"plateau", xen, 30, RuleMaxPasses},
		{"plateau", Xen{MaxPasses: 5}, 5, RuleMaxPasses},
		{"plateau", Xen{MaxPasses: -1}, 0, RuleUnderLimits}, // 3x RAM needs 46 more passes

		// 4500 >= 4000 arms the search at pass 5; 4200, 4400, 4100 never get
		// back to 4000, which is the strict low of the full window at pass 8.
		{"oscillation", smart, 8, RuleNoProgress},
		{"oscillation", Smart{Window: 2}, 5, RuleNoProgress},
		{"oscillation", Smart{Window: 8}, 11, RuleNoProgress},
		{"oscillation", xen, 30, RuleMaxPasses},
		{"oscillation-new-low", smart, 6, RuleLocalMinimum},

		// The burst at pass 4 does not stop Smart at 9000 pages; the next
		// pass is back below the low and Smart stops there.
		{"dirties-more-than-sent", smart, 5, RuleLocalMinimum},
		{"dirties-more-than-sent", Smart{Window: 2}, 4, RuleNoProgress},
		{"dirties-more-than-sent", xen, 8, RuleFewPages},

		// First pass that did not shrink: 3; stop by 3+5-2.
		{"rising", smart, 6, RuleNoProgress},
		{"rising", Smart{Window: 3}, 4, RuleNoProgress},
		// sent by pass 15: 131072 + 13*10000 + 2000*(0+...+12) = 417072
		// pages > 3 x 131072 = 393216; by pass 14: 383072.
		{"rising", xen, 15, RuleMaxRAMMultiple},
		{"rising", Xen{MaxRAMMultiple: 4}, 18, RuleMaxRAMMultiple},

		{"huge-ram-multiple", smart, 4, RuleLocalMinimum},
		// sent by pass 5: 131072+120000+125000+118000 = 494072 > 393216.
		{"huge-ram-multiple", xen, 5, RuleMaxRAMMultiple},

		{"few-pages", smart, 2, RuleFewPages},
		{"few-pages", xen, 2, RuleFewPages},

		{"first-pass-only", smart, 0, RuleFirstPass},
		{"first-pass-only", xen, 0, RuleFirstPass},
		{"empty", smart, 0, RuleFirstPass},
		{"empty", xen, 0, RuleFirstPass},

		// Budgets on the plateau. Elapsed at pass 9 is 61.07 s; a stop there
		// sends 5000 pages, 1.64 s at 100 Mbit/s.
		{"plateau", Budget{MaxTime: time.Minute, OnBreach: StopAndCopy}, 9, RuleBudgetTime},
		{"plateau", Budget{MaxTime: time.Minute, OnBreach: StopAndCopy, MaxDowntime: time.Second}, 9, RuleBudgetDowntime},
		{"plateau", Budget{Inner: smart, MaxTime: time.Minute, MaxDowntime: 2 * time.Second}, 6, RuleLocalMinimum},
		{"plateau", Budget{Inner: smart, MaxDowntime: time.Second}, 6, RuleBudgetDowntime},
		// sent by pass 8: 131072+20000+9000+6000+3*5000 = 181072 pages.
		{"plateau", Budget{Inner: xen, MaxBytes: 181072 * testPage, OnBreach: Abort}, 8, RuleBudgetBytes},
	}
	for _, p := range []Policy{QEMU{}, Budget{}} {
		for name := range synthetic {
			tests = append(tests, struct {
				trace  string
				policy Policy
				pass   int
				rule   string
			}{name, p, 0, RuleQEMU})
		}
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%s%+v", tt.trace, tt.policy.Name(), tt.policy), func(t *testing.T) {
			h, ok := synthetic[tt.trace]
			if !ok {
				t.Fatalf("no trace %q", tt.trace)
			}
			i, d := Replay(tt.policy, h)
			pass := 0
			if i >= 0 {
				pass = h.Passes[i].Pass
			}
			if pass != tt.pass || d.Rule != tt.rule {
				t.Errorf("stops at pass %d by %s, want pass %d by %s\n%s", pass, d.Rule, tt.pass, tt.rule, d)
			}
			if (pass == 0) != (d.Action == Continue) {
				t.Errorf("action %s at pass %d", d.Action, pass)
			}
			t.Log(d)
		})
	}
}

// TestSmartWindowBound: once a pass's count does not fall (pass q), Smart
// stops by pass q+W-2, whatever comes next.
func TestSmartWindowBound(t *testing.T) {
	for w := 2; w <= 7; w++ {
		// Counts that stay above the low forever.
		h := trace(series(30, []int64{testRAMPages, 9000, 5000}, 7000, 6000, 5500, 8000, 5001)...)
		i, d := Replay(Smart{Window: w}, h)
		if got, want := h.Passes[i].Pass, 4+w-2; got != want || d.Rule != RuleNoProgress {
			t.Errorf("window %d: stops at pass %d by %s, want %d by %s", w, got, d.Rule, want, RuleNoProgress)
		}
	}
}

// TestSmartIgnoresPassOne: pass 1's count is all of RAM, or 0 if QEMU was
// queried before the first sync (recorded in
// testdata/tunnel-idle-zero-first-pass.json); either way it is no low.
func TestSmartIgnoresPassOne(t *testing.T) {
	h := trace(0, 5000, 4000, 3000, 2000, 1000)
	if i, d := Replay(Smart{}, h); i != -1 {
		t.Errorf("stopped at pass %d: %s", h.Passes[i].Pass, d)
	}
}

func TestDecisionReasons(t *testing.T) {
	tests := []struct {
		policy Policy
		h      History
		want   []string
	}{
		{Smart{}, trace(testRAMPages, 20000, 6000, 9000), []string{"pass 4", "9000 pages", "low of 6000 at pass 3", "pass 3 dirtied at least as many pages as it sent"}},
		{Smart{}, trace(testRAMPages, 20000, 6000, 9000, 4000), []string{"4000 pages remain, the lowest of the last 4 passes"}},
		{Xen{}, trace(testRAMPages, 20000), []string{"pass 2", "20000 pages remain", "1.00 times RAM"}},
		{Budget{Inner: Smart{}, MaxDowntime: time.Second}, trace(testRAMPages, 20000, 20000), []string{"local-minimum", "6.554s", "78.1 MiB", "11.9 MiB/s", "1s downtime limit"}},
	}
	for _, tt := range tests {
		d := tt.policy.Decide(tt.h)
		for _, w := range tt.want {
			if !strings.Contains(d.Reason, w) {
				t.Errorf("%s: reason %q lacks %q", tt.policy.Name(), d.Reason, w)
			}
		}
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name   string
		window int
		want   Policy
		err    string
	}{
		{"smart", 0, Smart{}, ""},
		{"smart", 7, Smart{Window: 7}, ""},
		{"smart", 1, nil, "window 1"},
		{"smart", -3, nil, "window -3"},
		{"xen", 0, Xen{}, ""},
		{"xen", 5, Xen{}, ""},
		{"qemu", 5, QEMU{}, ""},
		{"Smart", 0, nil, `unknown policy "Smart"`},
		{"", 0, nil, "unknown policy"},
	}
	for _, tt := range tests {
		p, err := Parse(tt.name, tt.window)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("Parse(%q, %d) = %v, %v; want error with %q", tt.name, tt.window, p, err, tt.err)
			}
			continue
		}
		if err != nil || p != tt.want {
			t.Errorf("Parse(%q, %d) = %#v, %v; want %#v", tt.name, tt.window, p, err, tt.want)
		}
		if p != nil && p.Name() != tt.name {
			t.Errorf("Parse(%q).Name() = %q", tt.name, p.Name())
		}
	}
}

func TestExpectedDowntime(t *testing.T) {
	tests := []struct {
		remaining int64
		rate      float64
		want      time.Duration
		ok        bool
	}{
		{0, 1e6, 0, true},
		{-5, 1e6, 0, true},
		{1e6, 1e6, time.Second, true},
		{2801664, 12.5e6, 224133120 * time.Nanosecond, true},
		{1e6, 0, 0, false},
		{1e6, -1, 0, false},
		{1e6, math.NaN(), 0, false},
		{1e6, math.Inf(1), 0, true},
		{math.MaxInt64, 1e-9, math.MaxInt64, true},
	}
	for _, tt := range tests {
		got, ok := ExpectedDowntime(tt.remaining, tt.rate)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ExpectedDowntime(%d, %g) = %v, %v; want %v, %v", tt.remaining, tt.rate, got, ok, tt.want, tt.ok)
		}
	}
}
