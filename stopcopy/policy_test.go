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
	"oscillation-new-low":    trace(testRAMPages, 20000, 6000, 4000, 4500, 3900, 4300, 4100, 3800),
	"bump-in-decay":          trace(series(40, []int64{testRAMPages, 20000, 10000, 6000, 4000, 4200, 3000, 2500, 2200, 2100}, 2100, 2000, 2080, 2040)...),
	"slow-decline":           trace(series(40, []int64{testRAMPages, 20000, 9000, 6000, 5000, 4900, 4820, 4750, 4690, 4640, 4600, 4570, 4550, 4540}, 4535)...),
	"spike-on-plateau":       trace(series(40, []int64{testRAMPages, 20000, 10000, 6000, 5000, 5200, 4900, 5100, 5050, 5300, 7900, 6600, 5600, 5150}, 5000, 5100)...),
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

		// The set reaches 5000 pages at pass 5; the window of passes 5-9
		// is the first that does not shrink it (5000 to 5000), and pass 9
		// is its low. With a window of 2 that is pass 6.
		{"plateau", smart, 9, RuleLocalMinimum},
		{"plateau", Smart{Window: 2}, 6, RuleLocalMinimum},
		{"plateau", xen, 30, RuleMaxPasses},
		{"plateau", Xen{MaxPasses: 5}, 5, RuleMaxPasses},
		{"plateau", Xen{MaxPasses: -1}, 0, RuleUnderLimits}, // 3x RAM needs 46 more passes

		// Passes 4-8 do not shrink the set (4000 to 4100). The low of 4000
		// never comes back; Smart stops at the first pass that is the low
		// of its own window: 4150 at pass 16 (passes 12-16), with a window
		// of 8 too (passes 9-16). A window of 2 stops at the first rise.
		{"oscillation", smart, 16, RuleLocalMinimum},
		{"oscillation", Smart{Window: 2}, 5, RuleNoProgress},
		{"oscillation", Smart{Window: 8}, 16, RuleLocalMinimum},
		{"oscillation", xen, 30, RuleMaxPasses},
		// Passes 4-8 stop shrinking (4000 to 4100) but 3900 at pass 6 is
		// lower; Smart waits for the window's low and gets 3800 at pass 9.
		{"oscillation-new-low", smart, 9, RuleLocalMinimum},
		{"oscillation-new-low", Smart{Window: 2}, 5, RuleNoProgress},

		// The rise 4000 to 4200 at pass 6 is one noisy pass in a decay:
		// every window still shrinks the set until passes 11-15 (2100 to
		// 2100), and Smart stops at the window's low, 2000 at pass 16.
		// Judged pass by pass (a window of 2) it would stop at 4200.
		{"bump-in-decay", smart, 16, RuleLocalMinimum},
		{"bump-in-decay", Smart{Window: 2}, 6, RuleNoProgress},
		{"bump-in-decay", xen, 30, RuleMaxPasses},

		// 100 ms at 100 Mbit/s is 305 pages. Passes 5-9 cut the set by
		// 310 pages, passes 6-10 by 260: Smart stops at pass 10, the low.
		// Without the slack it waits until passes 15-19 hold 4535 pages
		// each, 105 pages fewer for 9 more passes.
		{"slow-decline", smart, 10, RuleLocalMinimum},
		{"slow-decline", Smart{Slack: -1}, 19, RuleLocalMinimum},
		{"slow-decline", Smart{Slack: 400 * time.Millisecond}, 9, RuleLocalMinimum}, // 1220 pages
		{"slow-decline", xen, 30, RuleMaxPasses},

		// Passes 5-9 stop shrinking the set (5000 to 5050). The burst at
		// pass 11 (7900) comes as the low of 4900 (pass 7) leaves the
		// window; Smart waits through the burst and its tail and stops at
		// 5150, the low of passes 10-14.
		{"spike-on-plateau", smart, 14, RuleLocalMinimum},
		{"spike-on-plateau", Smart{Window: 2}, 6, RuleNoProgress},
		{"spike-on-plateau", xen, 30, RuleMaxPasses},

		// The burst at pass 4 does not stop Smart: the windows keep
		// shrinking the set down to few pages.
		{"dirties-more-than-sent", smart, 8, RuleFewPages},
		{"dirties-more-than-sent", Smart{Window: 2}, 4, RuleNoProgress},
		{"dirties-more-than-sent", xen, 8, RuleFewPages},

		// The first full window, passes 2-6, grew the set at every pass.
		{"rising", smart, 6, RuleNoProgress},
		{"rising", Smart{Window: 3}, 4, RuleNoProgress},
		// sent by pass 15: 131072 + 13*10000 + 2000*(0+...+12) = 417072
		// pages > 3 x 131072 = 393216; by pass 14: 383072.
		{"rising", xen, 15, RuleMaxRAMMultiple},
		{"rising", Xen{MaxRAMMultiple: 4}, 18, RuleMaxRAMMultiple},

		// Passes 2-6 (120000 to 119000) and 3-7 (125000 to 121000) still
		// shrink the set as a whole.
		{"huge-ram-multiple", smart, 0, RuleShrinking},
		{"huge-ram-multiple", Smart{Window: 2}, 3, RuleNoProgress},
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
		{"plateau", Budget{Inner: smart, MaxTime: 2 * time.Minute, MaxDowntime: 2 * time.Second}, 9, RuleLocalMinimum},
		// Elapsed at pass 8 is 59.43 s: the budget ends the wait first.
		{"plateau", Budget{Inner: smart, MaxTime: 58 * time.Second, OnBreach: StopAndCopy}, 8, RuleBudgetTime},
		{"plateau", Budget{Inner: smart, MaxDowntime: time.Second}, 9, RuleBudgetDowntime},
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

// TestSmartNoProgress: a set that falls to a low at pass 4 and then grows
// at every pass stops Smart once the window holds only the low and the
// rises after it, at pass 4+W-1.
func TestSmartNoProgress(t *testing.T) {
	for w := 2; w <= 7; w++ {
		pages := []int64{testRAMPages, 9000, 7000, 5000}
		for v := int64(5200); len(pages) < 30; v += 200 {
			pages = append(pages, v)
		}
		h := trace(pages...)
		i, d := Replay(Smart{Window: w}, h)
		if i < 0 {
			t.Fatalf("window %d: never stopped: %s", w, d)
		}
		if got, want := h.Passes[i].Pass, 4+w-1; got != want || d.Rule != RuleNoProgress {
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
		{Smart{}, trace(testRAMPages, 20000, 6000, 9000), []string{"pass 4", "9000 pages remain", "3 of the 5 passes"}},
		{Smart{}, trace(testRAMPages, 20000, 6000, 4000, 4500, 3900), []string{"pass 6: 3900 pages remain", "by more than 305 pages (this one from 20000 at pass 2)"}},
		{Smart{}, trace(testRAMPages, 20000, 6000, 4000, 4500, 3900, 4300, 4100), []string{"pass 8: 4100 pages remain, above the low of 3900 at pass 6", "passes 4-8 did not cut the set by more than 305 pages (4000 to 4100)"}},
		{Smart{}, synthetic["oscillation-new-low"], []string{"pass 9: 3800 pages remain, the lowest of the last 5 passes", "passes 4-8 did not"}},
		{Smart{}, trace(rising(6)...), []string{"pass 6: 18000 pages remain", "no pass since pass 2 (10000 pages) sent more pages than it dirtied"}},
		{Xen{}, trace(testRAMPages, 20000), []string{"pass 2", "20000 pages remain", "1.00 times RAM"}},
		{Budget{Inner: Smart{Window: 2}, MaxDowntime: time.Second}, trace(testRAMPages, 20000, 20000), []string{"local-minimum", "6.554s", "78.1 MiB", "11.9 MiB/s", "1s downtime limit"}},
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

func TestSmartSlackPages(t *testing.T) {
	at := func(pageSize int64, rates ...float64) History {
		h := History{PageSize: pageSize}
		for i, r := range rates {
			h.Passes = append(h.Passes, Pass{Pass: i + 1, Reading: Reading{WireRate: r}})
		}
		return h
	}
	tests := []struct {
		s    Smart
		h    History
		want int64
	}{
		{Smart{}, at(4096, testRate), 305}, // 1.25 MB
		{Smart{}, at(0, testRate), 305},
		{Smart{}, at(65536, testRate), 19},
		{Smart{Slack: time.Second}, at(4096, testRate), 3051},
		{Smart{Slack: -1}, at(4096, testRate), 0},
		{Smart{}, at(4096, 1e6, testRate, 0), 305}, // the latest measured rate
		{Smart{}, at(4096), 0},
		{Smart{}, at(4096, 0, -5, math.NaN()), 0},
		{Smart{}, at(4096, math.Inf(1)), math.MaxInt64 / 2},
		{Smart{Slack: time.Duration(math.MaxInt64)}, at(1, 1e300), math.MaxInt64 / 2},
	}
	for _, tt := range tests {
		if got := tt.s.slackPages(tt.h); got != tt.want {
			t.Errorf("%+v at %+v: %d pages, want %d", tt.s, tt.h.Passes, got, tt.want)
		}
	}
}
