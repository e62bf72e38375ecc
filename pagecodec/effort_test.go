package pagecodec

import (
	"testing"
	"time"
)

// The pacer steps up while the encoder waits, down while it does not, one
// level a window, within fast..max, and books each window's time to the
// level it ran at.
func TestPacerSteps(t *testing.T) {
	t0 := time.Unix(0, 0)
	p := newPacer(t0)
	now := t0
	window := func(waited time.Duration) Effort {
		p.waited = waited
		now = now.Add(100 * time.Millisecond)
		p.judge(now)
		return p.level
	}
	for i, tc := range []struct {
		waited time.Duration
		want   Effort
	}{
		{60 * time.Millisecond, EffortMax}, // 60 % waiting: harder
		{90 * time.Millisecond, EffortMax}, // already the top
		{20 * time.Millisecond, EffortMax}, // 20 %: between the marks, hold
		{5 * time.Millisecond, EffortLZ4},  // 5 %: the encoder is the bottleneck
		{0, EffortFast},
		{0, EffortFast}, // already the bottom
		{41 * time.Millisecond, EffortLZ4},
	} {
		if got := window(tc.waited); got != tc.want {
			t.Fatalf("window %d (waited %v): level %v, want %v", i, tc.waited, got, tc.want)
		}
	}
	want := [EffortMax + 1]time.Duration{EffortFast: 200 * time.Millisecond, EffortLZ4: 200 * time.Millisecond, EffortMax: 300 * time.Millisecond}
	if p.spent != want {
		t.Errorf("spent %v, want %v", p.spent, want)
	}
	if got := p.spentBy(now.Add(30 * time.Millisecond)); got[EffortLZ4] != 230*time.Millisecond || p.spent != want {
		t.Errorf("spentBy booked %v to lz4 (want 230ms) or changed the pacer", got[EffortLZ4])
	}
}

// A window closes only every pacePages pages, and only once it is
// paceWindow long.
func TestPacerWindow(t *testing.T) {
	t0 := time.Unix(0, 0)
	p := newPacer(t0)
	calls := 0
	clock := func() time.Time { calls++; return t0.Add(time.Duration(calls) * paceWindow * 3 / 4) }
	for range pacePages - 1 {
		p.page(clock)
	}
	if calls != 0 {
		t.Fatalf("clock read %d times before %d pages", calls, pacePages)
	}
	p.page(clock) // three quarters of a window: too short
	if p.level != EffortLZ4 || p.start != t0 {
		t.Fatalf("a window shorter than %v was judged", paceWindow)
	}
	for range pacePages {
		p.page(clock) // one and a half, no waiting: down
	}
	if p.level != EffortFast || calls != 2 {
		t.Fatalf("level %v after %d clock reads, want fast after 2", p.level, calls)
	}
}
