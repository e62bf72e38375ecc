package plots

import (
	"bufio"
	"errors"
	"fmt"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// ErrInvalid is wrapped by every error that Save returns for data it cannot
// draw, as opposed to a failure to write the file.
var ErrInvalid = errors.New("invalid plot data")

// Figure size and resolution used when a plot leaves them zero.
const (
	DefaultWidth  = 8.0 // inches
	DefaultHeight = 4.0 // inches
	DefaultDPI    = 96  // pixels per inch
)

// Bounds on the figure, so that a wrong unit cannot ask for a gigapixel image.
const (
	minInches = 1.0
	maxPixels = 8192 // per side
)

// save renders a figure and writes it as a PNG image to path; on error
// path is left as it was.
func save(kind, title, path string, render func() (image.Image, layout, error)) error {
	img, _, err := render()
	if err != nil {
		return fmt.Errorf("%s %q: %w", kind, title, err)
	}
	if err := writePNG(path, img); err != nil {
		return fmt.Errorf("%s %q: write: %w", kind, title, err)
	}
	return nil
}

// newPlot checks a figure's size and data (validate) and starts its plot
// with a title and a tidy Y axis.
func newPlot(width, height float64, dpi int, validate func() error, title, yLabel string) (*plot.Plot, figureSize, error) {
	sz, err := sizeOf(width, height, dpi)
	if err != nil {
		return nil, sz, err
	}
	if err := validate(); err != nil {
		return nil, sz, err
	}
	plt := plot.New()
	plt.Title.Text = title
	plt.Y.Label.Text = yLabel
	plt.Y.Tick.Marker = tidyTicks{}
	return plt, sz, nil
}

// figureSize is a validated figure size.
type figureSize struct {
	w, h vg.Length
	dpi  int
}

// sizeOf applies the defaults to a plot's Width, Height (inches) and DPI and
// checks the result.
func sizeOf(width, height float64, dpi int) (figureSize, error) {
	if width == 0 {
		width = DefaultWidth
	}
	if height == 0 {
		height = DefaultHeight
	}
	if dpi == 0 {
		dpi = DefaultDPI
	}
	if dpi < 0 || dpi > maxPixels {
		return figureSize{}, fmt.Errorf("dpi %d out of range (1..%d): %w", dpi, maxPixels, ErrInvalid)
	}
	for _, d := range []struct {
		name string
		v    float64
	}{{"width", width}, {"height", height}} {
		if math.IsNaN(d.v) || d.v < minInches || d.v*float64(dpi) > maxPixels {
			return figureSize{}, fmt.Errorf("%s %v in at %d dpi: want at least %v in and at most %d pixels: %w",
				d.name, d.v, dpi, minInches, maxPixels, ErrInvalid)
		}
	}
	return figureSize{w: vg.Length(width) * vg.Inch, h: vg.Length(height) * vg.Inch, dpi: dpi}, nil
}

// layout records where a figure's data area landed, so that tests can find
// the pixels that belong to a data value.
type layout struct {
	plt    *plot.Plot
	data   draw.Canvas // the data area, in canvas units
	dpi    float64
	height float64 // image height in pixels
}

// legendFontSize is smaller than the plot's 12 pt default so that the legend
// strip takes less of the figure.
const legendFontSize = 10

// legendEntry is one line of a figure's legend.
type legendEntry struct {
	name  string
	thumb plot.Thumbnailer
}

// legendGap separates the legend strip from the plot and the figure's edge.
var legendGap = vg.Points(8)

// newLegend returns a legend of entries for the strip right of the plot.
func newLegend(entries []legendEntry) plot.Legend {
	l := plot.NewLegend()
	l.TextStyle.Font = font.From(plot.DefaultFont, legendFontSize)
	l.Top = true
	l.Left = true
	l.Padding = vg.Points(3)
	for _, e := range entries {
		l.Add(e.name, e.thumb)
	}
	return l
}

// legendStrip returns the width that legend takes from a figure width wide:
// none for an empty legend, at most half the figure.
func legendStrip(legend plot.Legend, width vg.Length) vg.Length {
	w := legend.Rectangle(draw.Canvas{}).Size().X
	if w <= 0 {
		return 0
	}
	return min(w+2*legendGap, width/2)
}

// render draws plt, with a legend of entries in a strip on its right, onto a
// fresh image canvas. The legend sits outside the data area so that it never
// hides a line or a bar.
func render(sz figureSize, plt *plot.Plot, entries []legendEntry) (image.Image, layout) {
	img := vgimg.NewWith(vgimg.UseWH(sz.w, sz.h), vgimg.UseDPI(sz.dpi))
	c := draw.New(img)
	plt.Title.Padding = vg.Points(6)

	legend := newLegend(entries)
	strip := legendStrip(legend, sz.w)
	area := draw.Crop(c, 0, -strip, 0, 0)
	plt.Draw(area)
	data := plt.DataCanvas(area)

	if strip > 0 {
		lc := draw.Canvas{Canvas: c.Canvas, Rectangle: vg.Rectangle{
			Min: vg.Point{X: area.Max.X + legendGap, Y: data.Min.Y},
			Max: vg.Point{X: c.Max.X - legendGap, Y: data.Max.Y},
		}}
		legend.Draw(lc)
	}
	return img.Image(), layout{plt: plt, data: data, dpi: float64(sz.dpi), height: float64(img.Image().Bounds().Dy())}
}

// writePNG encodes img to a temporary file in path's directory and renames it
// to path, so that path holds either its old content or the whole new image.
func writePNG(path string, img image.Image) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	w := bufio.NewWriter(f)
	if err := png.Encode(w, img); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	// CreateTemp makes the file private; a figure is for reading.
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// checkFinite reports the first NaN or infinite value of vs.
func checkFinite(what string, vs []float64) error {
	for i, v := range vs {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("%s[%d] is %v: %w", what, i, v, ErrInvalid)
		}
	}
	return nil
}
