package blockindex

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// syntheticIndex is an index of n random entries over 16 images that it
// does not read: for lookups only.
func syntheticIndex(n int) (*Index, []uint64) {
	r := rand.New(rand.NewPCG(1, 2))
	x := &Index{bs: 4096, images: make([]image, 16)}
	per := uint32(n/16 + 1)
	for i := range x.images {
		x.images[i] = image{path: fmt.Sprintf("/img/%02d", i), size: int64(per) * 4096, blocks: per, entries: per, id: uint64(i + 1)}
	}
	x.entries = make([]entry, n)
	keys := make([]uint64, n)
	for i := range x.entries {
		keys[i] = r.Uint64()
		x.entries[i] = entry{key: keys[i], img: uint32(i % 16), blk: uint32(i / 16)}
	}
	slices.SortFunc(x.entries, cmpEntry)
	return x, keys
}

// BenchmarkLookup is the destination's cost per key the source asks about:
// half hits, half misses, in an index of 2^21 entries (8 GiB of 4 KiB
// blocks).
func BenchmarkLookup(b *testing.B) {
	x, keys := syntheticIndex(1 << 21)
	r := rand.New(rand.NewPCG(3, 4))
	probe := make([]uint64, 1<<16)
	for i := range probe {
		if i%2 == 0 {
			probe[i] = keys[r.IntN(len(keys))]
		} else {
			probe[i] = r.Uint64()
		}
	}
	hits := 0
	i := 0
	for b.Loop() {
		if x.Has(probe[i&(len(probe)-1)]) {
			hits++
		}
		i++
	}
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "lookups/s")
	if i > 100 && (hits < i/3 || hits > 2*i/3) {
		b.Fatalf("%d hits of %d", hits, i)
	}
}

// BenchmarkKeys is the cost of the announcement's key list.
func BenchmarkKeys(b *testing.B) {
	x, _ := syntheticIndex(1 << 21)
	for b.Loop() {
		if len(x.Keys()) < 1<<20 {
			b.Fatal("keys missing")
		}
	}
	b.ReportMetric(float64(len(x.entries))*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

// randomImage writes size bytes that are neither zero nor repeated.
func randomImage(tb testing.TB, size int) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "random.img")
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(5, 6))
	for i := 0; i+8 <= size; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		tb.Fatal(err)
	}
	return p
}

// BenchmarkBuild hashes a 128 MiB image (from the page cache) at each
// block size with one and two workers; MB/s/core is the hashing rate of
// one core.
func BenchmarkBuild(b *testing.B) {
	const size = 128 << 20
	img := randomImage(b, size)
	for _, bs := range []int{512, 4096, 65536} {
		for _, workers := range []int{1, 2} {
			b.Run(fmt.Sprintf("bs=%d/workers=%d", bs, workers), func(b *testing.B) {
				b.SetBytes(size)
				for b.Loop() {
					x, _, err := Build(context.Background(), "", bs, []string{img}, Options{Workers: workers})
					if err != nil {
						b.Fatal(err)
					}
					x.Close()
				}
				b.ReportMetric(float64(size)*float64(b.N)/1e6/b.Elapsed().Seconds()/float64(workers), "MB/s/core")
			})
		}
	}
}

// TestIndexMemory measures the index's memory per entry and per TiB of
// images at each block size, on an image with no zero or repeated block
// (the worst case: one entry per block).
func TestIndexMemory(t *testing.T) {
	img := randomImage(t, 16<<20)
	for _, bs := range []int{512, 4096, 16384, 65536} {
		x, _, err := Build(context.Background(), "", bs, []string{img}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		st := x.Stats()
		t.Logf("block size %6d: %d entries, %.1f bytes/entry, %s per TiB of images", bs, st.Entries, st.BytesPerEntry, FormatBytes(st.MemoryPerTiB))
		if st.Entries != int64(16<<20/bs) || st.BytesPerEntry > 17 {
			t.Errorf("block size %d: %+v", bs, st)
		}
	}
}
