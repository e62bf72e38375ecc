package migstreamtest

import (
	"compress/bzip2"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var recorded struct {
	sync.Mutex
	byDir map[string]map[string][]byte
}

// Recorded loads the migration streams recorded from real QEMU in dir
// (migstream/testdata; its README says how they were recorded), by name:
// every NAME.src.bz2 or NAME.src.gz, decompressed, once per test binary.
// The streams are shared: do not modify them.
func Recorded(tb testing.TB, dir string) map[string][]byte {
	tb.Helper()
	recorded.Lock()
	defer recorded.Unlock()
	if m, ok := recorded.byDir[dir]; ok {
		return m
	}
	out := make(map[string][]byte)
	files, _ := filepath.Glob(filepath.Join(dir, "*.src.*"))
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
	if recorded.byDir == nil {
		recorded.byDir = make(map[string]map[string][]byte)
	}
	recorded.byDir[dir] = out
	return out
}
