package plots

import (
	"fmt"
	"image"
	"image/color"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Bars is a grouped bar chart: one group per category (e.g. "512 MiB",
// "TPC-W"), one bar per series (e.g. "default", "optimised", "paper
// default", "paper CloudNet"), bars rising from zero.
type Bars struct {
	Title, YLabel string
	Categories    []string
	Series        []BarSeries

	// Width and Height are the figure's size in inches, DefaultWidth and
	// DefaultHeight when zero; DPI is its resolution, DefaultDPI when zero.
	// The PNG is Width×DPI by Height×DPI pixels, rounded.
	Width, Height float64
	DPI           int
}

// BarSeries is one bar in each category. Values has one value per category.
// Low and High, when not nil, also have one per category and draw an error
// bar from Low to High (in reports, the min–max spread over repeated runs).
// They are given together or not at all.
type BarSeries struct {
	Name              string // legend entry; none when empty
	Values, Low, High []float64
}

// Save validates b and writes it as a PNG image to path. On error, path is
// left as it was.
func (b Bars) Save(path string) error {
	return save("bar chart", b.Title, path, b.render)
}

// validate checks everything that would make a chart wrong or empty.
func (b Bars) validate() error {
	if len(b.Categories) == 0 {
		return fmt.Errorf("no categories: %w", ErrInvalid)
	}
	if len(b.Series) == 0 {
		return fmt.Errorf("no series: %w", ErrInvalid)
	}
	n := len(b.Categories)
	for i, s := range b.Series {
		if len(s.Values) != n {
			return fmt.Errorf("series %d %q: %d values for %d categories: %w", i, s.Name, len(s.Values), n, ErrInvalid)
		}
		if err := checkFinite("values", s.Values); err != nil {
			return fmt.Errorf("series %d %q: %w", i, s.Name, err)
		}
		if (s.Low == nil) != (s.High == nil) {
			return fmt.Errorf("series %d %q: low and high must be given together: %w", i, s.Name, ErrInvalid)
		}
		if s.Low == nil {
			continue
		}
		if len(s.Low) != n || len(s.High) != n {
			return fmt.Errorf("series %d %q: %d low and %d high for %d categories: %w",
				i, s.Name, len(s.Low), len(s.High), n, ErrInvalid)
		}
		if err := checkFinite("low", s.Low); err != nil {
			return fmt.Errorf("series %d %q: %w", i, s.Name, err)
		}
		if err := checkFinite("high", s.High); err != nil {
			return fmt.Errorf("series %d %q: %w", i, s.Name, err)
		}
		// Low <= High only: a mean can differ from equal min and max in
		// the last bit, so Low <= Values <= High is not required.
		for j := range s.Low {
			if s.Low[j] > s.High[j] {
				return fmt.Errorf("series %d %q: low[%d] %v above high %v: %w", i, s.Name, j, s.Low[j], s.High[j], ErrInvalid)
			}
		}
	}
	return nil
}

// render validates b and draws it.
func (b Bars) render() (image.Image, layout, error) {
	plt, sz, err := newPlot(b.Width, b.Height, b.DPI, b.validate, b.Title, b.YLabel)
	if err != nil {
		return nil, layout{}, err
	}
	plt.NominalX(b.Categories...)

	grid := plotter.NewGrid()
	grid.Vertical.Color = nil
	plt.Add(grid)

	g := &groupedBars{n: len(b.Categories), series: b.Series}
	var entries []legendEntry
	for i, s := range b.Series {
		c := lineColors[i%len(lineColors)]
		g.colors = append(g.colors, c)
		if s.Name != "" {
			entries = append(entries, legendEntry{s.Name, fillRect{c}})
		}
	}
	plt.Add(g)
	slantCrowdedLabels(plt, b.Categories, sz.w-legendStrip(newLegend(entries), sz.w))
	// Headroom, so that the tallest bar does not touch the frame.
	if span := plt.Y.Max - plt.Y.Min; span > 0 {
		plt.Y.Max += 0.05 * span
	}

	img, lay := render(sz, plt, entries)
	return img, lay, nil
}

// yAxisAllowance is a generous guess at the width of the Y axis, its label
// and tick labels.
var yAxisAllowance = vg.Inch

// slantCrowdedLabels turns the category labels 30° when the widest would not
// fit its slot of a plot width wide, so that neighbours do not overprint.
func slantCrowdedLabels(plt *plot.Plot, categories []string, width vg.Length) {
	slot := (width - yAxisAllowance) / vg.Length(len(categories))
	var widest vg.Length
	for _, c := range categories {
		widest = max(widest, plt.X.Tick.Label.Width(c))
	}
	if widest <= 0.9*slot {
		return
	}
	plt.X.Tick.Label.Rotation = math.Pi / 6
	plt.X.Tick.Label.XAlign = draw.XRight
	plt.X.Tick.Label.YAlign = draw.YCenter
}

// groupWidth is the share of a category's slot that its bars fill.
const groupWidth = 0.8

// groupedBars draws the bars in data units: category i spans
// i±groupWidth/2, split evenly among the series, so bars fill the width of
// any figure.
type groupedBars struct {
	n      int // categories
	series []BarSeries
	colors []color.Color // one per series
}

// slot returns the X interval of series j's bar in category i.
func (g *groupedBars) slot(i, j int) (x0, x1 float64) {
	w := groupWidth / float64(len(g.series))
	x0 = float64(i) - groupWidth/2 + float64(j)*w
	return x0, x0 + w
}

func (g *groupedBars) Plot(c draw.Canvas, plt *plot.Plot) {
	trX, trY := plt.Transforms(&c)
	outline := draw.LineStyle{Color: color.Black, Width: vg.Points(0.5)}
	whisker := draw.LineStyle{Color: color.Black, Width: vg.Points(1)}
	for j, s := range g.series {
		for i, v := range s.Values {
			x0, x1 := g.slot(i, j)
			l, r := trX(x0), trX(x1)
			bottom, top := trY(0), trY(v)
			box := []vg.Point{{X: l, Y: bottom}, {X: l, Y: top}, {X: r, Y: top}, {X: r, Y: bottom}}
			c.FillPolygon(g.colors[j], c.ClipPolygonY(box))
			c.StrokeLines(outline, c.ClipLinesY(append(box, box[0]))...)

			if s.Low == nil {
				continue
			}
			mid := (l + r) / 2
			half := (r - l) / 4
			lo, hi := trY(s.Low[i]), trY(s.High[i])
			c.StrokeLines(whisker, c.ClipLinesY(
				[]vg.Point{{X: mid, Y: lo}, {X: mid, Y: hi}},
				[]vg.Point{{X: mid - half, Y: lo}, {X: mid + half, Y: lo}},
				[]vg.Point{{X: mid - half, Y: hi}, {X: mid + half, Y: hi}},
			)...)
		}
	}
}

// DataRange spans every category's slot on X and, on Y, zero, every value
// and every error bar.
func (g *groupedBars) DataRange() (xmin, xmax, ymin, ymax float64) {
	ymin, ymax = 0, 0
	for _, s := range g.series {
		for _, vs := range [][]float64{s.Values, s.Low, s.High} {
			for _, v := range vs {
				ymin, ymax = math.Min(ymin, v), math.Max(ymax, v)
			}
		}
	}
	return -0.5, float64(g.n) - 0.5, ymin, ymax
}
