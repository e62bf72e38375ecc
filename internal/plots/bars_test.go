package plots

import (
	"errors"
	"image"
	"image/color"
	"path/filepath"
	"testing"
)

func cloudNet() Bars {
	return Bars{
		Title:      "downtime",
		YLabel:     "downtime (s)",
		Categories: []string{"512 MiB", "1 GiB", "TPC-W"},
		Series: []BarSeries{
			{Name: "default", Values: []float64{1.2, 2.3, 3.1}, Low: []float64{1, 2, 2.5}, High: []float64{1.5, 2.6, 3.3}},
			{Name: "optimised", Values: []float64{0.5, 0.9, 1.1}, Low: []float64{0.4, 0.8, 1}, High: []float64{0.6, 1, 1.4}},
			{Name: "paper default", Values: []float64{1.1, 2, 3}},
			{Name: "paper CloudNet", Values: []float64{0.4, 0.8, 1}},
		},
	}
}

// countColor returns how many pixels of img are exactly c.
func countColor(img image.Image, c color.Color) int {
	want := color.RGBAModel.Convert(c)
	n := 0
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y++ {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x++ {
			if color.RGBAModel.Convert(img.At(x, y)) == want {
				n++
			}
		}
	}
	return n
}

func TestBarsSave(t *testing.T) {
	for _, tt := range []struct {
		name string
		bars Bars
		w, h int
	}{
		{"default size", cloudNet(), 768, 384},
		{"custom size", func() Bars { b := cloudNet(); b.Width, b.Height, b.DPI = 5, 5, 72; return b }(), 360, 360},
		{"negative and one category", Bars{Categories: []string{"delta"}, Series: []BarSeries{
			{Name: "a", Values: []float64{-2}}, {Name: "b", Values: []float64{3}},
		}}, 768, 384},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "fig.png")
			if err := tt.bars.Save(path); err != nil {
				t.Fatal(err)
			}
			img := decodePNG(t, path)
			checkDrawn(t, img, tt.w, tt.h)
			for i, s := range tt.bars.Series {
				if n := countColor(img, lineColors[i]); n < 100 {
					t.Errorf("series %q: %d pixels of its colour, want at least 100", s.Name, n)
				}
			}
		})
	}
}

func TestBarsErrorBarsDrawn(t *testing.T) {
	with := cloudNet()
	without := cloudNet()
	for i := range without.Series {
		without.Series[i].Low, without.Series[i].High = nil, nil
	}
	a, _, err := with.render()
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := without.render()
	if err != nil {
		t.Fatal(err)
	}
	// The whiskers are black; only the axes, frame and text are black
	// without them.
	black := color.Black
	if na, nb := countColor(a, black), countColor(b, black); na <= nb {
		t.Errorf("%d black pixels with error bars, %d without: want more with", na, nb)
	}
}

func TestBarsInvalid(t *testing.T) {
	cats := []string{"a", "b"}
	for _, tt := range []struct {
		name string
		bars Bars
	}{
		{"no categories", Bars{Series: []BarSeries{{Values: []float64{}}}}},
		{"no series", Bars{Categories: cats}},
		{"too few values", Bars{Categories: cats, Series: []BarSeries{{Values: []float64{1}}}}},
		{"too many values", Bars{Categories: cats, Series: []BarSeries{{Values: []float64{1, 2, 3}}}}},
		{"nan value", Bars{Categories: cats, Series: []BarSeries{{Values: []float64{1, nanF()}}}}},
		{"low without high", Bars{Categories: cats, Series: []BarSeries{{Values: []float64{1, 2}, Low: []float64{0, 1}}}}},
		{"short low", Bars{Categories: cats, Series: []BarSeries{{Values: []float64{1, 2}, Low: []float64{0}, High: []float64{2, 3}}}}},
		{"inf high", Bars{Categories: cats, Series: []BarSeries{{Values: []float64{1, 2}, Low: []float64{0, 1}, High: []float64{2, infF()}}}}},
		{"low above high", Bars{Categories: cats, Series: []BarSeries{{Values: []float64{1, 2}, Low: []float64{0, 3}, High: []float64{2, 2.5}}}}},
		{"negative dpi", Bars{Categories: cats, Series: []BarSeries{{Values: []float64{1, 2}}}, DPI: -1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			err := tt.bars.Save(filepath.Join(dir, "fig.png"))
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Save = %v, want an error wrapping ErrInvalid", err)
			}
			checkNoFiles(t, dir)
		})
	}
}

func TestBarsCrowdedLabelsSlant(t *testing.T) {
	var cats []string
	for _, w := range []string{"TPC-W", "SPECjbb", "Kernel compile", "Idle"} {
		cats = append(cats, w+" data", w+" time", w+" pause")
	}
	vals := make([]float64, len(cats))
	for i := range vals {
		vals[i] = float64(i%3) + 0.5
	}
	b := Bars{Categories: cats, Series: []BarSeries{{Name: "ours", Values: vals}, {Name: "paper", Values: vals}}}
	_, lay, err := b.render()
	if err != nil {
		t.Fatal(err)
	}
	if lay.plt.X.Tick.Label.Rotation == 0 {
		t.Error("12 long category labels not slanted")
	}
	_, lay, err = cloudNet().render()
	if err != nil {
		t.Fatal(err)
	}
	if lay.plt.X.Tick.Label.Rotation != 0 {
		t.Error("3 short category labels slanted")
	}
}
