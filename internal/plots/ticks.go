package plots

import (
	"math"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
)

// logTicks marks a log axis at 1, 2, …, 9 times each power of ten and labels
// the powers of ten. Unlike plot.LogTicks it starts at the decade below the
// minimum (plot.LogTicks truncates the exponent toward zero, so 0.05 starts
// at 0.1), and when fewer than two powers of ten fall in range it labels
// 2× and 5× too, then every mark, and on a range too narrow for two marks
// it falls back to linear ticks, so the axis always has numbers.
// Ticks requires 0 < vmin <= vmax.
type logTicks struct{}

func (logTicks) Ticks(vmin, vmax float64) []plot.Tick {
	lo := int(math.Floor(math.Log10(vmin)))
	hi := int(math.Ceil(math.Log10(vmax)))
	const slack = 1e-9 // keep a mark that equals min or max after rounding
	var (
		ticks     []plot.Tick
		mantissas []int
	)
	for e := lo; e <= hi; e++ {
		for m := 1; m <= 9; m++ {
			v := decimal(m, e)
			if v < vmin*(1-slack) || v > vmax*(1+slack) {
				continue
			}
			ticks = append(ticks, plot.Tick{Value: v})
			mantissas = append(mantissas, m)
		}
	}
	for _, labelled := range [][]int{{1}, {1, 2, 5}, {1, 2, 3, 4, 5, 6, 7, 8, 9}} {
		n := 0
		for i, t := range ticks {
			if slices.Contains(labelled, mantissas[i]) {
				ticks[i].Label = tickLabel(t.Value)
				n++
			}
		}
		if n >= 2 {
			return ticks
		}
	}
	// Too narrow for two marks: linear ticks read better.
	return tidyTicks{}.Ticks(vmin, vmax)
}

// decimal returns m×10^e as the float64 nearest to that decimal, so that it
// prints without rounding noise.
func decimal(m, e int) float64 {
	if e >= 0 {
		return float64(m) * math.Pow10(e)
	}
	return float64(m) / math.Pow10(-e)
}

// tidyTicks places ticks as plot.DefaultTicks does but labels them with as
// few digits as the value needs: plot.DefaultTicks prints a step of 2.5 with
// two decimals on every label ("0.00 25.00 50.00").
type tidyTicks struct{}

func (tidyTicks) Ticks(vmin, vmax float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(vmin, vmax)
	for i, t := range ticks {
		if !t.IsMinor() {
			ticks[i].Label = tickLabel(t.Value)
		}
	}
	return ticks
}

// tickLabel prints v rounded to 12 significant digits, which hides the
// float noise of a computed tick (0.30000000000000004), in plain notation
// unless v is very small or very large.
func tickLabel(v float64) string {
	v, _ = strconv.ParseFloat(strconv.FormatFloat(v, 'g', 12, 64), 64)
	if a := math.Abs(v); a == 0 {
		return "0" // and not "-0"
	} else if a < 1e-4 || a >= 1e7 {
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}
