package blockindex

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// goldenIndex is the index of testdata/valid-two-images.idx: two images
// that do not exist (an index outlives its images), one to be re-hashed.
func goldenIndex() *fileData {
	return &fileData{
		blockSize: 4096,
		roots:     []string{"/srv/images"},
		match:     "*.img",
		hashNanos: 1500000,
		hashBytes: 5 * 4096,
		images: []image{
			{path: "/srv/images/a.img", size: 3 * 4096, mtime: 1700000000e9, blocks: 3, zero: 1, entries: 2},
			{path: "/srv/images/b.img", size: 4096 + 100, mtime: 1700000001e9, blocks: 2, zero: 0, entries: 2, flags: flagAdded},
			{path: "/srv/images/c.img", size: 4096, mtime: 1700000002e9, blocks: 1, flags: flagRehash},
		},
		entries: []entry{{key: 5, img: 0, blk: 2}, {key: 5, img: 1, blk: 0}, {key: 9, img: 1, blk: 1}, {key: 1 << 63, img: 0, blk: 0}},
	}
}

func encoded(t testing.TB, d *fileData) []byte {
	var b bytes.Buffer
	if err := encode(&b, d); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// withCRC replaces the checksum of a changed file, so that the change
// itself is what is rejected.
func withCRC(b []byte) []byte {
	b = bytes.Clone(b)
	binary.LittleEndian.PutUint32(b[len(b)-4:], crc32.Checksum(b[:len(b)-4], castagnoli))
	return b
}

// golden are the testdata files: valid-* open, corrupt-* are rejected.
func golden(t testing.TB) map[string][]byte {
	v := encoded(t, goldenIndex())
	imagesAt := bytes.Index(v, []byte("/srv/images/a.img")) - 2 - 4 // u32 image count
	entriesAt := len(v) - 4 - 4*entryLen
	put32 := func(b []byte, at int, n uint32) []byte {
		b = bytes.Clone(b)
		binary.LittleEndian.PutUint32(b[at:], n)
		return b
	}
	unsorted := bytes.Clone(v)
	copy(unsorted[entriesAt:], v[entriesAt+entryLen:entriesAt+2*entryLen])
	copy(unsorted[entriesAt+entryLen:], v[entriesAt:entriesAt+entryLen])
	beyond := put32(v, entriesAt+12, 3) // block 3 of a 3-block image
	badBlocks := bytes.Clone(v)
	badBlocks[imagesAt+4+2+17+16] = 4 // a.img: 4 blocks for 3*4096 bytes
	return map[string][]byte{
		"valid-two-images.idx":          v,
		"valid-empty.idx":               encoded(t, &fileData{blockSize: 512, roots: []string{"/x"}}),
		"corrupt-empty.idx":             nil,
		"corrupt-magic.idx":             append([]byte("QFI\xfb"), v[4:]...),
		"corrupt-version.idx":           withCRC(append(append([]byte{}, v[:4]...), append([]byte{2}, v[5:]...)...)),
		"corrupt-block-size.idx":        withCRC(append(append([]byte{}, v[:5]...), append([]byte{30}, v[6:]...)...)),
		"corrupt-truncated-header.idx":  v[:20],
		"corrupt-truncated-images.idx":  v[:imagesAt+30],
		"corrupt-truncated-entries.idx": v[:entriesAt+20],
		"corrupt-no-checksum.idx":       v[:len(v)-4],
		"corrupt-checksum.idx":          append(bytes.Clone(v[:len(v)-1]), v[len(v)-1]^1),
		"corrupt-trailing-bytes.idx":    append(bytes.Clone(v), 0),
		"corrupt-huge-image-count.idx":  withCRC(put32(v, imagesAt, 1<<24)),
		"corrupt-huge-root-count.idx":   withCRC(put32(v, 8, 0xffffffff)),
		"corrupt-unsorted-entries.idx":  withCRC(unsorted),
		"corrupt-block-beyond.idx":      withCRC(beyond),
		"corrupt-image-blocks.idx":      withCRC(badBlocks),
		"corrupt-image-entries.idx":     withCRC(put32(v, imagesAt+4+2+17+16+4+4, 3)),
	}
}

func TestGolden(t *testing.T) {
	want := golden(t)
	if *update {
		for name, b := range want {
			if err := os.WriteFile(filepath.Join("testdata", name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	files, _ := filepath.Glob("testdata/*.idx")
	if len(files) != len(want) {
		t.Errorf("%d files in testdata, %d golden (go test -run TestGolden -update)", len(files), len(want))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(f)
		if !bytes.Equal(b, want[name]) {
			t.Errorf("%s differs from what the test makes (go test -run TestGolden -update)", name)
		}
		x, err := Open(f)
		if strings.HasPrefix(name, "valid-") {
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			if s := x.Check(); strings.Contains(name, "two-images") && len(s) != 3 {
				t.Errorf("%s: images that do not exist are not stale: %+v", name, s)
			}
			continue
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
}

func TestDecodeTruncatedEverywhere(t *testing.T) {
	v := encoded(t, goldenIndex())
	for n := range len(v) {
		_, err := decode(bytes.NewReader(v[:n]), int64(n))
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("cut at %d: %v", n, err)
		}
		if n > 8 && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("cut at %d: %v, want io.ErrUnexpectedEOF", n, err)
		}
	}
	// A reader that ends before the size it was given.
	if _, err := decode(bytes.NewReader(v[:40]), int64(len(v))); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short reader: %v", err)
	}
}

// FuzzOpen: any file is opened or rejected with ErrCorrupt, never a
// panic; what opens encodes back to the same bytes.
func FuzzOpen(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.idx")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fd, err := decode(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if again := encoded(t, fd); !bytes.Equal(again, b) {
			t.Fatalf("re-encoded differently:\n%x\n%x", b, again)
		}
	})
}
