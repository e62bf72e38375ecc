package plots

import (
	"fmt"
	"image"
	"image/color"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
)

// Span is a shaded interval on a time axis, e.g. a migration phase.
// From and To are in the units of the X axis (seconds in reports).
type Span struct {
	From, To float64
	Label    string
}

// Series is one line: the points (X[i], Y[i]) joined in order.
type Series struct {
	Name string // legend entry; none when empty
	X, Y []float64
}

// TimePlot is a line chart over time with shaded spans.
//
// Spans are drawn as translucent bands the full height of the data area,
// behind the grid and the lines. Spans that share a Label share a colour and
// one legend entry; distinct labels get distinct colours (the palette has
// eight, then repeats). A span without a label is grey and has no legend
// entry. The X axis stretches to show every span, and a span narrower than
// two points, even an instant with From == To, is widened to two points
// about its centre so that it shows.
//
// With LogY the Y axis is logarithmic and points with Y <= 0, which it cannot
// show, are left out: the line breaks there. Save fails if no series has a
// positive Y.
type TimePlot struct {
	Title, XLabel, YLabel string
	Series                []Series
	Spans                 []Span
	LogY                  bool

	// Width and Height are the figure's size in inches, DefaultWidth and
	// DefaultHeight when zero; DPI is its resolution, DefaultDPI when zero.
	// The PNG is Width×DPI by Height×DPI pixels, rounded.
	Width, Height float64
	DPI           int
}

// Save validates p and writes it as a PNG image to path. On error, path is
// left as it was.
func (p TimePlot) Save(path string) error {
	return save("time plot", p.Title, path, p.render)
}

// validate checks everything that would make a plot wrong or empty.
func (p TimePlot) validate() error {
	if len(p.Series) == 0 {
		return fmt.Errorf("no series: %w", ErrInvalid)
	}
	positive := false
	for i, s := range p.Series {
		if len(s.X) != len(s.Y) {
			return fmt.Errorf("series %d %q: %d x values but %d y values: %w", i, s.Name, len(s.X), len(s.Y), ErrInvalid)
		}
		if len(s.X) == 0 {
			return fmt.Errorf("series %d %q: no points: %w", i, s.Name, ErrInvalid)
		}
		if err := checkFinite("x", s.X); err != nil {
			return fmt.Errorf("series %d %q: %w", i, s.Name, err)
		}
		if err := checkFinite("y", s.Y); err != nil {
			return fmt.Errorf("series %d %q: %w", i, s.Name, err)
		}
		for _, y := range s.Y {
			positive = positive || y > 0
		}
	}
	if p.LogY && !positive {
		return fmt.Errorf("log y axis but no series has a positive y: %w", ErrInvalid)
	}
	for i, s := range p.Spans {
		if err := checkFinite("span", []float64{s.From, s.To}); err != nil {
			return fmt.Errorf("span %d %q: %w", i, s.Label, err)
		}
		if s.To < s.From {
			return fmt.Errorf("span %d %q: to %v is before from %v: %w", i, s.Label, s.To, s.From, ErrInvalid)
		}
	}
	return nil
}

// render validates p and draws it.
func (p TimePlot) render() (image.Image, layout, error) {
	plt, sz, err := newPlot(p.Width, p.Height, p.DPI, p.validate, p.Title, p.YLabel)
	if err != nil {
		return nil, layout{}, err
	}
	plt.X.Label.Text = p.XLabel
	plt.X.Tick.Marker = tidyTicks{}

	// Bands first, so that grid and lines are drawn over them.
	var spanEntries []legendEntry
	if len(p.Spans) > 0 {
		b := &bands{spans: p.Spans, colors: make([]color.Color, len(p.Spans))}
		byLabel := map[string]color.Color{}
		for i, s := range p.Spans {
			if s.Label == "" {
				b.colors[i] = unlabelledSpanColor
				continue
			}
			c, ok := byLabel[s.Label]
			if !ok {
				c = spanColors[len(spanEntries)%len(spanColors)]
				byLabel[s.Label] = c
				spanEntries = append(spanEntries, legendEntry{s.Label, fillRect{c}})
			}
			b.colors[i] = c
		}
		plt.Add(b)
	}

	plt.Add(plotter.NewGrid())

	var entries []legendEntry
	for i, s := range p.Series {
		l := &line{xs: s.X, ys: s.Y, logY: p.LogY, style: lineStyle(i)}
		plt.Add(l)
		if s.Name != "" {
			entries = append(entries, legendEntry{s.Name, lineThumb{l.style}})
		}
	}
	// Series above spans in the legend, each in the order given.
	entries = append(entries, spanEntries...)

	if p.LogY {
		plt.Y.Scale = plot.LogScale{}
		plt.Y.Tick.Marker = logTicks{}
		if plt.Y.Min == plt.Y.Max {
			// One positive value: give the axis a decade around it.
			plt.Y.Min /= math.Sqrt(10)
			plt.Y.Max *= math.Sqrt(10)
		}
	}

	img, lay := render(sz, plt, entries)
	return img, lay, nil
}
