package workload

import (
	"testing"
	"time"
)

func TestPacer(t *testing.T) {
	t0 := time.Unix(0, 0)
	ms := func(n float64) time.Time { return t0.Add(time.Duration(n * float64(time.Millisecond))) }
	type step struct {
		at       time.Time
		wantN    int
		wantWait time.Duration
	}
	tests := []struct {
		name  string
		rate  float64
		steps []step
	}{
		{"nothing due at start: sleep one quantum", 5000, []step{{ms(0), 0, 2 * time.Millisecond}}},
		{"batch of the pages due", 5000, []step{{ms(2), 10, 0}, {ms(2), 0, 2 * time.Millisecond}, {ms(4.1), 10, 0}}},
		{"slow rate sleeps until the next page", 2, []step{{ms(0), 0, 500 * time.Millisecond}, {ms(500), 1, 0}, {ms(600), 0, 400 * time.Millisecond}}},
		{"batch capped", 1e6, []step{{ms(5), 1024, 0}, {ms(5), 1024, 0}, {ms(5), 1024, 0}, {ms(5), 1024, 0}, {ms(5), 904, 0}}},
		{"debt beyond 250ms forgiven", 1000, []step{{ms(10_000), 250, 0}, {ms(10_000), 0, 2 * time.Millisecond}, {ms(10_002), 2, 0}}},
		{"debt within 250ms repaid", 1000, []step{{ms(200), 200, 0}, {ms(201), 1, 0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPacer(tt.rate, t0)
			for i, s := range tt.steps {
				n, wait := p.next(s.at)
				if n != s.wantN || wait != s.wantWait {
					t.Fatalf("step %d at %v: got (%d, %v), want (%d, %v)", i, s.at.Sub(t0), n, wait, s.wantN, s.wantWait)
				}
				p.wrote(n)
			}
		})
	}
}

func TestRateMeter(t *testing.T) {
	t0 := time.Unix(0, 0)
	m := newRateMeter(t0)
	if r := m.rate(t0.Add(50 * time.Millisecond)); r != 0 {
		t.Errorf("rate before 100ms = %v, want 0", r)
	}
	m.observe(t0.Add(500*time.Millisecond), 1000)
	if r := m.rate(t0.Add(500 * time.Millisecond)); r != 2000 {
		t.Errorf("average before first window = %v, want 2000", r)
	}
	m.observe(t0.Add(time.Second), 3000)
	m.observe(t0.Add(1500*time.Millisecond), 3100) // partial window: not reported yet
	if r := m.rate(t0.Add(1500 * time.Millisecond)); r != 3000 {
		t.Errorf("rate of first window = %v, want 3000", r)
	}
	m.observe(t0.Add(2*time.Second), 3500)
	if r := m.rate(t0.Add(2 * time.Second)); r != 500 {
		t.Errorf("rate of second window = %v, want 500", r)
	}
}
