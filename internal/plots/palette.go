package plots

import (
	"image/color"

	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// lineColors are the Okabe–Ito colours, which stay distinct for readers with
// colour-vision deficiency, ordered so that the first few contrast most.
var lineColors = []color.Color{
	color.NRGBA{R: 0x00, G: 0x72, B: 0xB2, A: 0xFF}, // blue
	color.NRGBA{R: 0xD5, G: 0x5E, B: 0x00, A: 0xFF}, // vermillion
	color.NRGBA{R: 0x00, G: 0x9E, B: 0x73, A: 0xFF}, // bluish green
	color.NRGBA{R: 0xCC, G: 0x79, B: 0xA7, A: 0xFF}, // reddish purple
	color.NRGBA{R: 0xE6, G: 0x9F, B: 0x00, A: 0xFF}, // orange
	color.NRGBA{R: 0x56, G: 0xB4, B: 0xE9, A: 0xFF}, // sky blue
	color.NRGBA{R: 0x00, G: 0x00, B: 0x00, A: 0xFF}, // black
	color.NRGBA{R: 0xF0, G: 0xE4, B: 0x42, A: 0xFF}, // yellow
}

// spanAlpha keeps bands light enough that grid lines and overlapping bands
// show through.
const spanAlpha = 0x80

// spanColors are ColorBrewer's Pastel1, pale enough to sit behind the
// saturated line colours without being mistaken for a series.
var spanColors = []color.Color{
	color.NRGBA{R: 0xFB, G: 0xB4, B: 0xAE, A: spanAlpha},
	color.NRGBA{R: 0xB3, G: 0xCD, B: 0xE3, A: spanAlpha},
	color.NRGBA{R: 0xCC, G: 0xEB, B: 0xC5, A: spanAlpha},
	color.NRGBA{R: 0xDE, G: 0xCB, B: 0xE4, A: spanAlpha},
	color.NRGBA{R: 0xFE, G: 0xD9, B: 0xA6, A: spanAlpha},
	color.NRGBA{R: 0xFF, G: 0xFF, B: 0xCC, A: spanAlpha},
	color.NRGBA{R: 0xE5, G: 0xD8, B: 0xBD, A: spanAlpha},
	color.NRGBA{R: 0xFD, G: 0xDA, B: 0xEC, A: spanAlpha},
}

// unlabelledSpanColor fills spans that have no label.
var unlabelledSpanColor = color.NRGBA{R: 0xC0, G: 0xC0, B: 0xC0, A: spanAlpha}

// lineStyle returns the style of the i-th series: the palette's colours
// first solid, then dashed, then dotted, so that more series than colours
// stay apart.
func lineStyle(i int) draw.LineStyle {
	dashes := [][]vg.Length{
		nil,
		{vg.Points(6), vg.Points(3)},
		{vg.Points(1.5), vg.Points(2)},
	}
	return draw.LineStyle{
		Color:  lineColors[i%len(lineColors)],
		Width:  vg.Points(1.5),
		Dashes: dashes[(i/len(lineColors))%len(dashes)],
	}
}

// fillRect is a legend thumbnail: a filled rectangle.
type fillRect struct{ color color.Color }

func (f fillRect) Thumbnail(c *draw.Canvas) {
	c.FillPolygon(f.color, []vg.Point{
		{X: c.Min.X, Y: c.Min.Y},
		{X: c.Min.X, Y: c.Max.Y},
		{X: c.Max.X, Y: c.Max.Y},
		{X: c.Max.X, Y: c.Min.Y},
	})
}

// lineThumb is a legend thumbnail: a short horizontal line.
type lineThumb struct{ style draw.LineStyle }

func (l lineThumb) Thumbnail(c *draw.Canvas) {
	y := c.Center().Y
	c.StrokeLine2(l.style, c.Min.X, y, c.Max.X, y)
}
