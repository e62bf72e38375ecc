package blockindex

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/zeebo/blake3"
)

// neighbours is the interface the block codec declares; Index must meet it.
type neighbours interface {
	BlockSize() int
	Keys() []uint64
	Read(fp [32]byte, buf []byte) error
}

var _ neighbours = (*Index)(nil)

const tbs = 4096

// content is block id's content: zeros for 0, else pseudo-random bytes.
func content(id int, bs int) []byte {
	b := make([]byte, bs)
	if id == 0 {
		return b
	}
	r := rand.New(rand.NewPCG(uint64(id), 7))
	for i := 0; i < bs; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b
}

func fp(id int) [32]byte { return blake3.Sum256(content(id, tbs)) }

// writeImage writes an image whose blocks have the contents ids.
func writeImage(t testing.TB, path string, ids ...int) {
	t.Helper()
	var b bytes.Buffer
	for _, id := range ids {
		b.Write(content(id, tbs))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// rewriteBlock changes block blk of path to content id and puts the mtime
// back, so that only reading the block tells.
func rewriteBlock(t *testing.T, path string, blk, id int) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(content(id, tbs), int64(blk)*tbs); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Chtimes(path, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
}

func keysOf(ids ...int) []uint64 {
	var ks []uint64
	for _, id := range ids {
		ks = append(ks, Key(fp(id)))
	}
	slices.Sort(ks)
	return slices.Compact(ks)
}

// twoImages makes a.img (contents 1 2 3 0 2 4) and b.img (3 5 0 6).
func twoImages(t *testing.T) (dir, a, b string) {
	dir = t.TempDir()
	a, b = filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	writeImage(t, a, 1, 2, 3, 0, 2, 4)
	writeImage(t, b, 3, 5, 0, 6)
	return dir, a, b
}

func build(t *testing.T, indexPath string, roots ...string) *Index {
	t.Helper()
	x, _, err := Build(context.Background(), indexPath, tbs, roots, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.Close() })
	return x
}

func mustRead(t *testing.T, x *Index, id int) {
	t.Helper()
	buf := make([]byte, tbs)
	if err := x.Read(fp(id), buf); err != nil {
		t.Fatalf("read block %d: %v", id, err)
	}
	if !bytes.Equal(buf, content(id, tbs)) {
		t.Fatalf("read block %d: wrong content", id)
	}
}

func TestIndexBuildKeysRead(t *testing.T) {
	dir, _, _ := twoImages(t)
	x := build(t, filepath.Join(dir, "n.idx"), dir)
	st := x.Stats()
	want := Stats{BlockSize: tbs, Images: 2, BytesIndexed: 10 * tbs, BlocksHashed: 10, ZeroBlocks: 2, Entries: 7, UniqueBlocks: 6}
	got := st
	got.MemoryBytes, got.BytesPerEntry, got.MemoryPerTiB, got.MemoryPerTiBNonZero, got.HashTime, got.HashBytes, got.HashMBps = 0, 0, 0, 0, 0, 0, 0
	if got != want {
		t.Errorf("stats %+v, want %+v", got, want)
	}
	if st.HashBytes != 10*tbs || st.MemoryBytes < 7*16 {
		t.Errorf("stats %+v", st)
	}
	if k := x.Keys(); !slices.Equal(k, keysOf(1, 2, 3, 4, 5, 6)) {
		t.Errorf("keys %x", k)
	}
	for id := 1; id <= 6; id++ {
		mustRead(t, x, id)
	}
	buf := make([]byte, tbs)
	if err := x.Read(fp(7), buf); !errors.Is(err, ErrStale) {
		t.Errorf("read of a block not indexed: %v", err)
	}
	if err := x.Read(fp(1), buf[:512]); err == nil || errors.Is(err, ErrStale) {
		t.Errorf("read into a short buffer: %v", err)
	}
	if s := x.Check(); len(s) != 0 {
		t.Errorf("check %+v", s)
	}
}

func TestIndexBlockSizes(t *testing.T) {
	for _, bs := range []int{0, 256, 1000, 2 << 20} {
		if _, _, err := Build(context.Background(), "", bs, []string{t.TempDir()}, Options{}); err == nil {
			t.Errorf("block size %d accepted", bs)
		}
	}
}

// The last block of an image whose size is not a multiple of the block
// size is indexed padded with zeros, and read back so.
func TestIndexPartialLastBlock(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "odd.img")
	data := append(content(1, tbs), content(2, tbs)[:1000]...)
	os.WriteFile(img, data, 0o644)
	x := build(t, "", img)
	padded := append(content(2, tbs)[:1000], make([]byte, tbs-1000)...)
	buf := make([]byte, tbs)
	if err := x.Read(blake3.Sum256(padded), buf); err != nil || !bytes.Equal(buf, padded) {
		t.Fatalf("read of the last block: %v", err)
	}
	cv, err := x.Coverage(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	if cv.NonZeroBytes != tbs+1000 || cv.FoundBytes != cv.NonZeroBytes || cv.Fraction != 1 {
		t.Errorf("coverage %+v", cv)
	}
}

// An image whose size or mtime changed is reported by Check, and after
// Refresh its blocks are out of Keys (those another image holds stay).
func TestIndexStaleRefresh(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, b string)
	}{
		{"mtime", func(t *testing.T, b string) {
			rewriteBlock(t, b, 1, 9)
			later := time.Now().Add(time.Hour)
			os.Chtimes(b, later, later)
		}},
		{"size", func(t *testing.T, b string) { writeImage(t, b, 3, 9, 0, 6, 8) }},
		{"gone", func(t *testing.T, b string) { os.Remove(b) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, _, b := twoImages(t)
			x := build(t, "", dir)
			tc.change(t, b)
			s := x.Check()
			if len(s) != 1 || s[0].Path != b || s[0].Excluded {
				t.Fatalf("check %+v", s)
			}
			if k := x.Keys(); len(k) != 6 {
				t.Errorf("before refresh, %d keys", len(k))
			}
			s = x.Refresh()
			if len(s) != 1 || s[0].Path != b || !s[0].Excluded {
				t.Fatalf("refresh %+v", s)
			}
			if k := x.Keys(); !slices.Equal(k, keysOf(1, 2, 3, 4)) {
				t.Errorf("keys after refresh %x", k)
			}
			if err := x.Read(fp(5), make([]byte, tbs)); !errors.Is(err, ErrStale) {
				t.Errorf("read of an excluded image's block: %v", err)
			}
			mustRead(t, x, 3)
			if st := x.Stats(); st.Images != 1 || st.StaleImages != 1 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// A block changed without a change of mtime is caught by Read's check: the
// image is excluded and another image's copy serves the block.
func TestIndexReadDetectsChange(t *testing.T) {
	dir, a, b := twoImages(t)
	x := build(t, "", dir)
	rewriteBlock(t, a, 2, 9) // a's copy of 3; b has 3 too
	if s := x.Check(); len(s) != 0 {
		t.Fatalf("check sees %+v", s)
	}
	mustRead(t, x, 3)
	s := x.Check()
	if len(s) != 1 || s[0].Path != a || !s[0].Excluded {
		t.Fatalf("after the read, check %+v", s)
	}
	if k := x.Keys(); !slices.Equal(k, keysOf(3, 5, 6)) {
		t.Errorf("keys %x", k)
	}
	rewriteBlock(t, b, 1, 9)
	if err := x.Read(fp(5), make([]byte, tbs)); !errors.Is(err, ErrStale) {
		t.Fatalf("read of a changed block: %v", err)
	}
	if k := x.Keys(); len(k) != 0 {
		t.Errorf("keys %x", k)
	}
}

// A block with the right key but another fingerprint (a key collision) is
// an error, and the image stays.
func TestIndexReadKeyCollision(t *testing.T) {
	dir, _, _ := twoImages(t)
	x := build(t, "", dir)
	other := fp(1)
	other[31] ^= 1
	if err := x.Read(other, make([]byte, tbs)); !errors.Is(err, ErrStale) {
		t.Fatalf("read: %v", err)
	}
	if s := x.Check(); len(s) != 0 {
		t.Errorf("check %+v", s)
	}
	mustRead(t, x, 1)
}

func TestIndexSaveOpen(t *testing.T) {
	dir, _, b := twoImages(t)
	p := filepath.Join(dir, "n.idx")
	x := build(t, p, dir)
	if err := x.Save(); err != nil {
		t.Fatal(err)
	}
	y, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer y.Close()
	if !slices.Equal(x.Keys(), y.Keys()) || !slices.Equal(x.Images(), y.Images()) || x.BlockSize() != y.BlockSize() {
		t.Errorf("reopened index differs:\n%+v\n%+v", x.Images(), y.Images())
	}
	if xs, ys := x.Stats(), y.Stats(); xs.Entries != ys.Entries || xs.HashTime != ys.HashTime || xs.UniqueBlocks != ys.UniqueBlocks {
		t.Errorf("stats %+v, reopened %+v", xs, ys)
	}
	mustRead(t, y, 6)
	if leftovers, _ := filepath.Glob(p + ".*"); len(leftovers) != 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}

	// An image excluded by Read is saved without entries, still excluded
	// when opened, and hashed again by Update.
	rewriteBlock(t, b, 3, 8)
	if err := y.Read(fp(6), make([]byte, tbs)); !errors.Is(err, ErrStale) {
		t.Fatal(err)
	}
	if err := y.Save(); err != nil {
		t.Fatal(err)
	}
	z, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer z.Close()
	if s := z.Check(); len(s) != 1 || s[0].Path != b || !s[0].Excluded {
		t.Fatalf("check %+v", s)
	}
	st, err := z.Update(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Rehashed != 1 || st.Unchanged != 1 || st.HashedBytes != 4*tbs {
		t.Errorf("update %+v", st)
	}
	if k := z.Keys(); !slices.Equal(k, keysOf(1, 2, 3, 4, 5, 8)) {
		t.Errorf("keys %x", k)
	}
}

// Update hashes only what changed: new files, files whose size or mtime
// changed; vanished files leave the index.
func TestIndexUpdate(t *testing.T) {
	dir, a, b := twoImages(t)
	c := filepath.Join(dir, "sub", "c.img")
	writeImage(t, c, 10, 11)
	p := filepath.Join(dir, "n.idx")
	x := build(t, p, dir)
	if err := x.Save(); err != nil {
		t.Fatal(err)
	}
	os.Remove(a)
	writeImage(t, b, 3, 5, 0, 6, 12)
	writeImage(t, filepath.Join(dir, "sub", "d.img"), 13)
	y, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer y.Close()
	st, err := y.Update(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Images != 3 || st.Unchanged != 1 || st.New != 1 || st.Rehashed != 1 || st.Removed != 1 || st.HashedBytes != 6*tbs {
		t.Errorf("update %+v", st)
	}
	if k := y.Keys(); !slices.Equal(k, keysOf(3, 5, 6, 12, 10, 11, 13)) {
		t.Errorf("keys %x", k)
	}
	for _, id := range []int{3, 5, 6, 12, 10, 11, 13} {
		mustRead(t, y, id)
	}
	st, err = y.Update(context.Background())
	if err != nil || st.Unchanged != 3 || st.HashedBytes != 0 {
		t.Errorf("second update %+v, %v", st, err)
	}
}

// Add indexes an image outside the roots; Update keeps it while it exists.
func TestIndexAdd(t *testing.T) {
	dir, _, _ := twoImages(t)
	other := filepath.Join(t.TempDir(), "target.img")
	writeImage(t, other, 20, 0, 21)
	p := filepath.Join(dir, "n.idx")
	x := build(t, p, dir)
	if err := x.Add(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	if k := x.Keys(); !slices.Equal(k, keysOf(1, 2, 3, 4, 5, 6, 20, 21)) {
		t.Errorf("keys %x", k)
	}
	mustRead(t, x, 21)
	x.Save()
	y, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer y.Close()
	if st, err := y.Update(context.Background()); err != nil || st.Unchanged != 3 {
		t.Fatalf("update %+v, %v", st, err)
	}
	writeImage(t, other, 22)
	if err := y.Add(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	if k := y.Keys(); !slices.Equal(k, keysOf(1, 2, 3, 4, 5, 6, 22)) {
		t.Errorf("keys after adding again %x", k)
	}
	os.Remove(other)
	if st, err := y.Update(context.Background()); err != nil || st.Removed != 1 {
		t.Fatalf("update %+v, %v", st, err)
	}
	if err := y.Add(context.Background(), p); err == nil {
		t.Error("the index file itself was added")
	}
}

// Walking skips the index file and its temporaries, empty files, files not
// matching the glob and qcow2 images; a named qcow2 image is refused.
func TestIndexDiscover(t *testing.T) {
	dir, a, _ := twoImages(t)
	p := filepath.Join(dir, "n.idx")
	writeImage(t, p, 30)
	writeImage(t, p+".123", 31)
	os.WriteFile(filepath.Join(dir, "empty.img"), nil, 0o644)
	q := filepath.Join(dir, "disk.qcow2")
	os.WriteFile(q, append([]byte(qcow2Magic), content(32, tbs)...), 0o644)
	writeImage(t, filepath.Join(dir, "notes.txt"), 33)
	os.Symlink(a, filepath.Join(dir, "link.img"))

	x, st, err := Build(context.Background(), p, tbs, []string{dir}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	if n := len(x.Images()); n != 3 || len(st.Skipped) != 1 || st.Skipped[0].Path != q {
		t.Errorf("%d images %+v, skipped %+v", n, x.Images(), st.Skipped)
	}
	y, _, err := Build(context.Background(), p, tbs, []string{dir}, Options{Match: "*.img"})
	if err != nil {
		t.Fatal(err)
	}
	defer y.Close()
	if n := len(y.Images()); n != 2 {
		t.Errorf("with *.img: %+v", y.Images())
	}
	if err := y.Add(context.Background(), q); !errors.Is(err, ErrQCOW2) {
		t.Errorf("add of a qcow2 image: %v", err)
	}
	if _, _, err := Build(context.Background(), "", tbs, []string{filepath.Join(dir, "missing")}, Options{}); err == nil {
		t.Error("a missing root was accepted")
	}
}

// Reads go on while images are added and the index refreshed.
func TestIndexConcurrentRead(t *testing.T) {
	dir, _, _ := twoImages(t)
	x := build(t, "", dir)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, tbs)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := 1 + i%6
				if err := x.Read(fp(id), buf); err != nil {
					t.Errorf("read %d: %v", id, err)
					return
				}
				x.Keys()
			}
		}()
	}
	for i := range 20 {
		img := filepath.Join(t.TempDir(), "t.img")
		writeImage(t, img, 40+i, 3)
		if err := x.Add(context.Background(), img); err != nil {
			t.Error(err)
		}
		x.Refresh()
	}
	close(stop)
	wg.Wait()
}

func TestIndexCancel(t *testing.T) {
	dir, _, _ := twoImages(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := Build(ctx, "", tbs, []string{dir}, Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("build with a cancelled context: %v", err)
	}
}
