package pagecodec_test

import (
	"compress/bzip2"
	"compress/gzip"
	"github.com/vmigrate/vmigrate/pagecodec"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// recordedStreams loads the streams recorded from real QEMU migrations in
// ../migstream/testdata (its README says how they were recorded).
func recordedStreams(tb testing.TB) map[string][]byte {
	tb.Helper()
	out := make(map[string][]byte)
	files, _ := filepath.Glob("../migstream/testdata/*.src.*")
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			tb.Fatal(err)
		}
		var r io.Reader
		switch filepath.Ext(f) {
		case ".gz":
			if r, err = gzip.NewReader(fh); err != nil {
				tb.Fatalf("%s: %v", f, err)
			}
		case ".bz2":
			r = bzip2.NewReader(fh)
		default:
			fh.Close()
			continue
		}
		data, err := io.ReadAll(r)
		fh.Close()
		if err != nil {
			tb.Fatalf("%s: %v", f, err)
		}
		name, _, _ := strings.Cut(filepath.Base(f), ".")
		out[name] = data
	}
	return out
}

// recordedSeeds are the first 256 KiB of each recorded stream.
func recordedSeeds(tb testing.TB) [][]byte {
	var out [][]byte
	for _, s := range recordedStreams(tb) {
		out = append(out, s[:min(len(s), 256<<10)])
	}
	return out
}

// Every recorded stream comes back byte for byte.
func TestRoundTripRecorded(t *testing.T) {
	streams := recordedStreams(t)
	if len(streams) == 0 {
		t.Skip("no recorded streams in ../migstream/testdata")
	}
	for name, s := range streams {
		t.Run(name, func(t *testing.T) {
			enc, st := roundTrip(t, s, pagecodec.Config{})
			t.Logf("%d stream bytes, %d encoded (%.1f%%); pages %+v; zero records %+v; passthrough %q",
				len(s), len(enc), 100*float64(len(enc))/float64(len(s)), st.Pages, st.ZeroRecords, st.Passthrough)
			if st.Passthrough == "" || strings.HasPrefix(st.Passthrough, "not understood") {
				t.Errorf("codec stopped parsing: %q", st.Passthrough)
			}
		})
	}
}
