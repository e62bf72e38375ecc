package probe

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func TestGaps(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	tests := []struct {
		name     string
		answers  []time.Duration
		gap      int64
		from, to int64
	}{
		{"none", nil, 0, 0, 0},
		{"one", ms(5), 0, 0, 0},
		{"steady", ms(10, 20, 30, 40), 10, 10, 20},
		{"outage", ms(10, 20, 30, 530, 540), 500, 30, 530},
		{"out of order arrivals", ms(530, 10, 30, 20, 540), 500, 30, 530},
		{"two outages, longer wins", ms(0, 100, 110, 400, 410), 290, 110, 400},
	}
	for _, tc := range tests {
		r := Gaps(tc.answers, Result{})
		if r.MaxGapMS != tc.gap || r.GapFromMS != tc.from || r.GapToMS != tc.to {
			t.Errorf("%s: gap %d from %d to %d, want %d from %d to %d", tc.name, r.MaxGapMS, r.GapFromMS, r.GapToMS, tc.gap, tc.from, tc.to)
		}
	}
}

// A guest that stops answering for 300 ms: requests sent meanwhile wait
// and complete when it comes back, and the gap is the outage.
func TestProberSeesOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		down, up := start.Add(200*time.Millisecond), start.Add(500*time.Millisecond)
		send := func(ctx context.Context) error {
			if now := time.Now(); now.After(down) && now.Before(up) {
				select {
				case <-time.After(up.Sub(now)):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			time.Sleep(time.Millisecond) // the round trip
			return nil
		}
		p := Start(context.Background(), Config{Send: send, Interval: 10 * time.Millisecond})
		time.Sleep(800 * time.Millisecond)
		r := p.Stop()
		if r.MaxGap < 295*time.Millisecond || r.MaxGap > 311*time.Millisecond {
			t.Errorf("gap %v, want about 300ms (from %d to %d ms)", r.MaxGap, r.GapFromMS, r.GapToMS)
		}
		if r.Sent < 75 || r.Answered != r.Sent || r.Failed != 0 {
			t.Errorf("sent %d answered %d failed %d", r.Sent, r.Answered, r.Failed)
		}
	})
}

// Requests that never come back are bounded: beyond MaxInFlight ticks are
// skipped, and time-outs count as failures.
func TestProberBoundsRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var inFlight, peak atomic.Int32
		send := func(ctx context.Context) error {
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for {
				old := peak.Load()
				if n <= old || peak.CompareAndSwap(old, n) {
					break
				}
			}
			<-ctx.Done()
			return errors.New("no answer")
		}
		p := Start(context.Background(), Config{Send: send, Interval: time.Millisecond, Timeout: 50 * time.Millisecond, MaxInFlight: 8})
		time.Sleep(200 * time.Millisecond)
		r := p.Stop()
		if peak.Load() > 8 {
			t.Errorf("%d requests in flight, bound 8", peak.Load())
		}
		if r.Skipped == 0 || r.Failed == 0 || r.Answered != 0 {
			t.Errorf("result %+v", r)
		}
	})
}
