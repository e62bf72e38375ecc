package guest

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// corpusBytes is the size of the memdirty body "files" corpus: four times
// the page codec's zstd window, so that no page of a working set repeats
// within what a cross-page compressor remembers.
const corpusBytes = 32 << 20

// buildCorpus concatenates kernel modules of the package (real binaries:
// code, data, strings, symbol tables) as a page cache holds files: each
// starts on a page boundary, its last page padded with zeros. Modules are
// taken at an even stride over the sorted tree, so every subsystem is in
// it, until limit bytes. The same package gives the same corpus.
func buildCorpus(kernelDir string, limit int) ([]byte, error) {
	type mod struct {
		path string
		size int64
	}
	var mods []mod
	var total int64
	err := filepath.WalkDir(kernelDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && strings.HasSuffix(p, ".ko") {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			mods = append(mods, mod{p, fi.Size()})
			total += fi.Size()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(mods, func(a, b mod) int { return strings.Compare(a.path, b.path) })
	stride := max(1, int(total/int64(limit)))
	out := make([]byte, 0, limit)
	for start := 0; start < stride && len(out) < limit; start++ {
		for i := start; i < len(mods) && len(out) < limit; i += stride {
			b, err := os.ReadFile(mods[i].path)
			if err != nil {
				return nil, err
			}
			out = append(out, b...)
			if pad := len(out) % 4096; pad != 0 {
				out = append(out, make([]byte, 4096-pad)...)
			}
		}
	}
	return out[:min(len(out), limit)], nil
}
