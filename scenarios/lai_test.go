package scenarios

import (
	"math"
	"strings"
	"testing"
)

// The rows are medians over verified runs only, and the cuts are
// against plain's medians.
func TestLaiRows(t *testing.T) {
	runs := []LaiRun{
		{Mode: LaiPlain, Rep: 1, WireBytes: 900, TotalMS: 100_000, Verified: true, DisksIdentical: true},
		{Mode: LaiIndex, Rep: 1, WireBytes: 100, TotalMS: 30_000, Verified: true, DisksIdentical: true},
		{Mode: LaiPlain, Rep: 2, WireBytes: 1000, TotalMS: 90_000, Verified: true, DisksIdentical: true},
		{Mode: LaiIndex, Rep: 2, WireBytes: 5, TotalMS: 1, Error: "link cut"},
		{Mode: LaiPlain, Rep: 3, WireBytes: 800, TotalMS: 95_000, Verified: true, DisksIdentical: true},
		{Mode: LaiIndex, Rep: 3, WireBytes: 300, TotalMS: 40_000, Verified: true, DisksIdentical: false},
		{Mode: LaiIndex, Rep: 4, WireBytes: 200, TotalMS: 20_000, Verified: true, DisksIdentical: true},
	}
	rows := laiRows(runs, []string{LaiPlain, LaiCodec, LaiIndex})
	if len(rows) != 3 {
		t.Fatalf("%d rows", len(rows))
	}
	p, c, x := rows[0], rows[1], rows[2]
	if p.Runs != 3 || p.WireBytes != 900 || p.WireMin != 800 || p.WireMax != 1000 || p.TotalMS != 95_000 || p.BytesCut != 0 {
		t.Errorf("plain %+v", p)
	}
	if c.Runs != 0 || c.Failed != 0 || c.BytesCut != 0 {
		t.Errorf("codec (no runs) %+v", c)
	}
	// Two verified index runs (100, 200 bytes; 30 s, 20 s): the lower middle.
	if x.Runs != 2 || x.Failed != 2 || x.WireBytes != 100 || x.TotalMS != 20_000 {
		t.Errorf("index %+v", x)
	}
	if math.Abs(x.BytesCut-(1-100.0/900)) > 1e-9 || math.Abs(x.TimeCut-(1-20_000.0/95_000)) > 1e-9 {
		t.Errorf("index cuts %.3f %.3f", x.BytesCut, x.TimeCut)
	}
	md := LaiResult{Rows: rows, Link: "bandwidth 100mbit rtt 50ms"}.Markdown()
	for _, want := range []string{"| plain | 3 |", "| codec | 0 (0 failed)", "| index | 2 (2 failed) |", "-89% | -79% |", "-66% | -59% |"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

// Without a plain row there is nothing to cut against.
func TestLaiRowsNoPlain(t *testing.T) {
	rows := laiRows([]LaiRun{{Mode: LaiIndex, WireBytes: 1, TotalMS: 1, Verified: true, DisksIdentical: true}}, []string{LaiIndex})
	if rows[0].BytesCut != 0 || rows[0].TimeCut != 0 {
		t.Errorf("%+v", rows[0])
	}
}
