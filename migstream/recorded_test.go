package migstream_test

import (
	"compress/bzip2"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// recordedStreams loads the migration streams recorded from real QEMU in
// testdata/ (README.md there says how), by name.
func recordedStreams(tb testing.TB) map[string][]byte {
	tb.Helper()
	out := make(map[string][]byte)
	files, _ := filepath.Glob("testdata/*.src.*")
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
