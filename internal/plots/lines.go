package plots

import (
	"image/color"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// line draws one series. Unlike plotter.Line it breaks where a point cannot
// be shown (Y <= 0 on a log axis) and marks a point that has no neighbour to
// join, which a polyline would not draw at all.
type line struct {
	xs, ys []float64
	logY   bool
	style  draw.LineStyle
}

func (l *line) shown(i int) bool { return !l.logY || l.ys[i] > 0 }

func (l *line) Plot(c draw.Canvas, plt *plot.Plot) {
	trX, trY := plt.Transforms(&c)
	var runs [][]vg.Point
	var run []vg.Point
	for i := range l.xs {
		if !l.shown(i) {
			if len(run) > 0 {
				runs = append(runs, run)
			}
			run = nil
			continue
		}
		run = append(run, vg.Point{X: trX(l.xs[i]), Y: trY(l.ys[i])})
	}
	if len(run) > 0 {
		runs = append(runs, run)
	}

	dot := draw.GlyphStyle{Color: l.style.Color, Radius: l.style.Width * 1.5, Shape: draw.CircleGlyph{}}
	for _, r := range runs {
		if len(r) == 1 && c.Contains(r[0]) {
			c.DrawGlyph(dot, r[0])
		}
	}
	c.StrokeLines(l.style, c.ClipLinesXY(runs...)...)
}

// DataRange covers the points that are shown. On a log axis a series with
// no positive Y adds nothing to the Y range.
func (l *line) DataRange() (xmin, xmax, ymin, ymax float64) {
	xmin, ymin = math.Inf(1), math.Inf(1)
	xmax, ymax = math.Inf(-1), math.Inf(-1)
	for i := range l.xs {
		xmin, xmax = math.Min(xmin, l.xs[i]), math.Max(xmax, l.xs[i])
		if l.shown(i) {
			ymin, ymax = math.Min(ymin, l.ys[i]), math.Max(ymax, l.ys[i])
		}
	}
	return xmin, xmax, ymin, ymax
}

// minBand is the narrowest a band is drawn, so that a stop-and-copy phase of
// a few hundred milliseconds in a minute-long run still shows.
var minBand = vg.Points(2)

// bands shades spans the full height of the data area. Their Y extent is the
// canvas's, not data, so they work on any Y scale.
type bands struct {
	spans  []Span
	colors []color.Color // one per span
}

func (b *bands) Plot(c draw.Canvas, plt *plot.Plot) {
	trX, _ := plt.Transforms(&c)
	for i, s := range b.spans {
		x0, x1 := trX(s.From), trX(s.To)
		if w := x1 - x0; w < minBand {
			x0 -= (minBand - w) / 2
			x1 = x0 + minBand
		}
		c.FillPolygon(b.colors[i], c.ClipPolygonX([]vg.Point{
			{X: x0, Y: c.Min.Y},
			{X: x0, Y: c.Max.Y},
			{X: x1, Y: c.Max.Y},
			{X: x1, Y: c.Min.Y},
		}))
	}
}

// DataRange widens X to every span and leaves Y alone.
func (b *bands) DataRange() (xmin, xmax, ymin, ymax float64) {
	xmin, xmax = math.Inf(1), math.Inf(-1)
	for _, s := range b.spans {
		xmin, xmax = math.Min(xmin, s.From), math.Max(xmax, s.To)
	}
	return xmin, xmax, math.Inf(1), math.Inf(-1)
}
