package plots

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// ramp returns n points of t from 0 to 100 s with y rising from 10 to 20.
func ramp(n int) Series {
	s := Series{Name: "throughput"}
	for i := range n {
		x := 100 * float64(i) / float64(n-1)
		s.X = append(s.X, x)
		s.Y = append(s.Y, 10+x/10)
	}
	return s
}

func TestTimePlotSave(t *testing.T) {
	for _, tt := range []struct {
		name string
		plot TimePlot
		w, h int
	}{
		{"default size", TimePlot{Title: "t", XLabel: "time (s)", YLabel: "req/s", Series: []Series{ramp(50)}}, 768, 384},
		{"custom size", TimePlot{Series: []Series{ramp(50)}, Width: 6.5, Height: 3, DPI: 100}, 650, 300},
		{"spans and unnamed series", TimePlot{
			Series: []Series{ramp(50), {X: []float64{0, 100}, Y: []float64{12, 12}}},
			Spans:  []Span{{From: 10, To: 40, Label: "pre-copy"}, {From: 40, To: 40.2, Label: "stop-and-copy"}, {From: 60, To: 70}},
		}, 768, 384},
		{"single point", TimePlot{Series: []Series{{Name: "one", X: []float64{3}, Y: []float64{7}}}}, 768, 384},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "fig.png")
			if err := tt.plot.Save(path); err != nil {
				t.Fatal(err)
			}
			checkDrawn(t, decodePNG(t, path), tt.w, tt.h)
		})
	}
}

func TestTimePlotSpanShadesItsInterval(t *testing.T) {
	base := TimePlot{Series: []Series{ramp(200)}}
	with := base
	with.Spans = []Span{{From: 30, To: 40, Label: "pre-copy"}}

	plain, plainLay, err := base.render()
	if err != nil {
		t.Fatal(err)
	}
	shaded, shadedLay, err := with.render()
	if err != nil {
		t.Fatal(err)
	}

	// Inside the span nearly every row of the data area is tinted; the
	// line crosses a column in a few pixels only.
	if got := columnShade(shaded, shadedLay, shadedLay.pixelX(35)); got < 0.9 {
		t.Errorf("with span: %.2f of column at x=35 shaded, want >= 0.9", got)
	}
	if got := columnShade(plain, plainLay, plainLay.pixelX(35)); got > 0.1 {
		t.Errorf("without span: %.2f of column at x=35 shaded, want <= 0.1", got)
	}
	if got := columnShade(shaded, shadedLay, shadedLay.pixelX(65)); got > 0.1 {
		t.Errorf("with span: %.2f of column at x=65, outside it, shaded, want <= 0.1", got)
	}
}

func TestTimePlotNarrowSpanShows(t *testing.T) {
	for _, s := range []Span{
		{From: 55, To: 55.01, Label: "stop-and-copy"},
		{From: 55, To: 55, Label: "switchover"},
	} {
		p := TimePlot{Series: []Series{ramp(200)}, Spans: []Span{s}}
		img, lay, err := p.render()
		if err != nil {
			t.Fatal(err)
		}
		if got := columnShade(img, lay, lay.pixelX((s.From+s.To)/2)); got < 0.9 {
			t.Errorf("span %v: %.2f of the column at its centre shaded, want >= 0.9", s, got)
		}
	}
}

func TestTimePlotSpanWidensXAxis(t *testing.T) {
	p := TimePlot{Series: []Series{ramp(20)}, Spans: []Span{{From: 110, To: 120, Label: "late"}}}
	img, lay, err := p.render()
	if err != nil {
		t.Fatal(err)
	}
	if got := columnShade(img, lay, lay.pixelX(115)); got < 0.9 {
		t.Errorf("%.2f of column in a span past the data shaded, want >= 0.9", got)
	}
}

func TestTimePlotLogY(t *testing.T) {
	for _, tt := range []struct {
		name string
		ys   []float64
	}{
		{"zero and negative points", []float64{0.01, 0.02, 0, -1, 0.5, 3, 0.004}},
		{"one positive point", []float64{0, 0, 5, 0}},
		{"within one decade", []float64{2.1, 2.5, 2.9, 2.2}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			xs := make([]float64, len(tt.ys))
			for i := range xs {
				xs[i] = float64(i)
			}
			p := TimePlot{LogY: true, YLabel: "latency (s)", Series: []Series{
				{Name: "p99", X: xs, Y: tt.ys},
				{Name: "all zero", X: []float64{0, 1}, Y: []float64{0, 0}},
			}}
			path := filepath.Join(t.TempDir(), "fig.png")
			if err := p.Save(path); err != nil {
				t.Fatal(err)
			}
			checkDrawn(t, decodePNG(t, path), 768, 384)
		})
	}
}

func TestTimePlotInvalid(t *testing.T) {
	good := ramp(10)
	for _, tt := range []struct {
		name string
		plot TimePlot
	}{
		{"no series", TimePlot{}},
		{"only spans", TimePlot{Spans: []Span{{From: 1, To: 2, Label: "a"}}}},
		{"mismatched lengths", TimePlot{Series: []Series{{X: []float64{1, 2, 3}, Y: []float64{1, 2}}}}},
		{"empty series", TimePlot{Series: []Series{good, {Name: "empty"}}}},
		{"nan y", TimePlot{Series: []Series{{X: []float64{1, 2}, Y: []float64{1, nanF()}}}}},
		{"inf x", TimePlot{Series: []Series{{X: []float64{math.Inf(1), 2}, Y: []float64{1, 2}}}}},
		{"log y without positive y", TimePlot{LogY: true, Series: []Series{{X: []float64{1, 2}, Y: []float64{0, -3}}}}},
		{"span backwards", TimePlot{Series: []Series{good}, Spans: []Span{{From: 5, To: 4, Label: "x"}}}},
		{"span nan", TimePlot{Series: []Series{good}, Spans: []Span{{From: nanF(), To: 5}}}},
		{"negative width", TimePlot{Series: []Series{good}, Width: -8}},
		{"huge", TimePlot{Series: []Series{good}, Width: 1000}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			err := tt.plot.Save(filepath.Join(dir, "fig.png"))
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Save = %v, want an error wrapping ErrInvalid", err)
			}
			checkNoFiles(t, dir)
		})
	}
}

func TestTimePlotFailedSaveKeepsOldFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fig.png")
	if err := (TimePlot{Series: []Series{ramp(10)}}).Save(path); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := TimePlot{Series: []Series{{X: []float64{1}, Y: []float64{nanF()}}}}
	if err := bad.Save(path); err == nil {
		t.Fatal("Save with NaN succeeded")
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("failed Save changed the existing file")
	}
}
