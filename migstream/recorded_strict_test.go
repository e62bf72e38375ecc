package migstream_test

import (
	"bytes"
	"testing"

	"github.com/vmigrate/vmigrate/migstream"
)

// Every stream recorded from real QEMU parses in strict mode up to its
// device state, and writing the records back gives the stream exactly.
func TestRecordedStreams(t *testing.T) {
	streams := recordedStreams(t)
	if len(streams) == 0 {
		t.Skip("no recorded streams in testdata")
	}
	for name, s := range streams {
		t.Run(name, func(t *testing.T) {
			r := migstream.NewReader(bytes.NewReader(s))
			r.Strict = true
			p, err := parseAll(t, r)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(p.out, s) {
				t.Fatalf("rebuilt stream differs (%d bytes, want %d)", len(p.out), len(s))
			}
			if p.reason != "device state" {
				t.Errorf("parsing stopped at %q, want the device state", p.reason)
			}
			counts := map[migstream.Kind]int{}
			for _, k := range p.kinds {
				counts[k]++
			}
			t.Logf("%d bytes: %v", len(s), counts)
			if counts[migstream.KindSectionStart] != 1 || counts[migstream.KindSectionEnd] != 1 || counts[migstream.KindMemSize] != 1 {
				t.Errorf("sections: %v", counts)
			}
		})
	}
}
