package plots

import (
	"math"
	"slices"
	"testing"

	"gonum.org/v1/plot"
)

func labels(ticks []plot.Tick) []string {
	var out []string
	for _, t := range ticks {
		if t.Label != "" {
			out = append(out, t.Label)
		}
	}
	return out
}

func TestLogTicks(t *testing.T) {
	for _, tt := range []struct {
		min, max float64
		want     []string
	}{
		{1, 1000, []string{"1", "10", "100", "1000"}},
		{0.002, 0.5, []string{"0.01", "0.1"}},
		{0.05, 0.9, []string{"0.05", "0.1", "0.2", "0.5"}},
		{3, 40, []string{"5", "10", "20"}},
		{2, 8, []string{"2", "5"}},
		{2.5, 4.5, []string{"3", "4"}},
	} {
		got := labels(logTicks{}.Ticks(tt.min, tt.max))
		if !slices.Equal(got, tt.want) {
			t.Errorf("logTicks(%v, %v) labels = %q, want %q", tt.min, tt.max, got, tt.want)
		}
	}
	// Too narrow for two marks: linear ticks, still labelled.
	if got := labels(logTicks{}.Ticks(2.1, 2.9)); len(got) < 2 {
		t.Errorf("logTicks(2.1, 2.9) labels = %q, want at least two", got)
	}
}

func TestTickLabel(t *testing.T) {
	for _, tt := range []struct {
		v    float64
		want string
	}{
		{0, "0"},
		{math.Copysign(0, -1), "0"},
		{25, "25"},
		{0.1 + 0.2, "0.3"},
		{-2.5, "-2.5"},
		{1234567, "1234567"},
		{2e9, "2e+09"},
		{1e-5, "1e-05"},
	} {
		if got := tickLabel(tt.v); got != tt.want {
			t.Errorf("tickLabel(%v) = %q, want %q", tt.v, got, tt.want)
		}
	}
}
