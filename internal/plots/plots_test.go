package plots

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"testing"
)

func nanF() float64 { return math.NaN() }
func infF() float64 { return math.Inf(1) }

// decodePNG reads the PNG at path.
func decodePNG(t *testing.T, path string) image.Image {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
	return img
}

func isWhite(c color.Color) bool {
	r, g, b, _ := c.RGBA()
	return r == 0xffff && g == 0xffff && b == 0xffff
}

// checkDrawn fails unless img is w×h pixels and clearly has something drawn
// on it: a share of non-white pixels and more than a handful of colours.
func checkDrawn(t *testing.T, img image.Image, w, h int) {
	t.Helper()
	if got := img.Bounds().Size(); got != (image.Point{X: w, Y: h}) {
		t.Fatalf("image is %v, want %dx%d", got, w, h)
	}
	colors := map[color.RGBA]bool{}
	nonWhite := 0
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y++ {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x++ {
			c := img.At(x, y)
			colors[color.RGBAModel.Convert(c).(color.RGBA)] = true
			if !isWhite(c) {
				nonWhite++
			}
		}
	}
	if min := w * h / 100; nonWhite < min {
		t.Errorf("%d non-white pixels, want at least %d", nonWhite, min)
	}
	if len(colors) < 10 {
		t.Errorf("%d distinct colours, want at least 10", len(colors))
	}
}

// checkNoFiles fails if dir holds anything, such as a partial PNG or a
// temporary file left by a failed save.
func checkNoFiles(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("failed save left %s", e.Name())
	}
}

// pixelX returns the image column of the data value x.
func (l layout) pixelX(x float64) int {
	trX, _ := l.plt.Transforms(&l.data)
	return int(trX(x).Dots(l.dpi))
}

// pixelRows returns the first and last image rows of the data area.
func (l layout) pixelRows() (top, bottom int) {
	return int(l.height - l.data.Max.Y.Dots(l.dpi) + 1), int(l.height - l.data.Min.Y.Dots(l.dpi) - 1)
}

// columnShade returns the share of the data area's rows in image column x
// that are not white.
func columnShade(img image.Image, lay layout, x int) float64 {
	top, bottom := lay.pixelRows()
	n := 0
	for y := top; y <= bottom; y++ {
		if !isWhite(img.At(x, y)) {
			n++
		}
	}
	return float64(n) / float64(bottom-top+1)
}

func TestSizeOf(t *testing.T) {
	for _, tt := range []struct {
		name          string
		width, height float64
		dpi           int
		wantErr       bool
	}{
		{"defaults", 0, 0, 0, false},
		{"explicit", 6.5, 3, 100, false},
		{"negative width", -1, 4, 0, true},
		{"tiny height", 8, 0.5, 0, true},
		{"nan width", nanF(), 4, 0, true},
		{"too many pixels", 100, 4, 96, true},
		{"negative dpi", 8, 4, -96, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := sizeOf(tt.width, tt.height, tt.dpi)
			if tt.wantErr != (err != nil) {
				t.Fatalf("sizeOf(%v, %v, %v) = %v, want error %v", tt.width, tt.height, tt.dpi, err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
		})
	}
}

func TestWritePNGFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	img := image.NewRGBA(image.Rect(0, 0, 4, 4))
	// The target is a non-empty directory, so the rename fails after the
	// temporary file is written.
	target := filepath.Join(dir, "fig.png")
	if err := os.MkdirAll(filepath.Join(target, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := writePNG(target, img); err == nil {
		t.Fatal("writePNG over a directory succeeded")
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "fig.png" {
		t.Errorf("dir holds %v, want only the fig.png directory", ents)
	}

	if err := writePNG(filepath.Join(dir, "missing", "fig.png"), img); err == nil {
		t.Error("writePNG into a missing directory succeeded")
	}
}
