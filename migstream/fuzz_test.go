package migstream_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/vmigrate/vmigrate/migstream"
)

// FuzzReader holds the Reader to its promise on any input: lenient mode
// gives back exactly the bytes it was given, strict mode fails only with a
// FormatError or a truncation, and neither panics.
func FuzzReader(f *testing.F) {
	in := sample()
	f.Add(in)
	f.Add(in[:200])
	for _, s := range recordedStreams(f) {
		f.Add(s[:min(len(s), 16<<10)])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := migstream.NewReader(bytes.NewReader(data))
		p, err := parseAll(t, r)
		if err != nil {
			t.Fatalf("lenient: %v", err)
		}
		if !bytes.Equal(p.out, data) {
			t.Fatalf("lenient: rebuilt %d bytes differ from the %d read", len(p.out), len(data))
		}
		r = migstream.NewReader(bytes.NewReader(data))
		r.Strict = true
		_, err = parseAll(t, r)
		var fe *migstream.FormatError
		if err != nil && !errors.As(err, &fe) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("strict: unexpected error %v", err)
		}
	})
}
