package command

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmigrate/vmigrate/blockindex"
)

// The JSON that index build and index show print.
type indexBuildOutput struct {
	Index  string                 `json:"index"`
	Update blockindex.UpdateStats `json:"update"`
	Stats  blockindex.Stats       `json:"stats"`
}

type indexShowOutput struct {
	Index  string                  `json:"index"`
	Roots  []string                `json:"roots"`
	Stats  blockindex.Stats        `json:"stats"`
	Images []blockindex.Image      `json:"images"`
	Stale  []blockindex.StaleImage `json:"stale"`
}

// randomBytes is n pseudo-random bytes drawn from seed.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 11))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// ext4Image makes a raw ext4 image of size with 4 KiB blocks holding
// files (name -> content), as mkfs.ext4 -d lays them out.
func ext4Image(t *testing.T, img, size string, files map[string][]byte) {
	t.Helper()
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skip("no mkfs.ext4 (e2fsprogs)")
	}
	src := t.TempDir()
	for name, b := range files {
		writeFile(t, filepath.Join(src, name), b)
	}
	if out, err := exec.Command(mkfs, "-q", "-F", "-b", "4096", "-d", src, img, size).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 -d %s %s %s: %v\n%s", src, img, size, err, out)
	}
}

// ext4Files are the files of one "OS": n files of assorted sizes.
func ext4Files(seed uint64, n int) [][]byte {
	var out [][]byte
	for i := range n {
		out = append(out, randomBytes(seed*1000+uint64(i), 3000+i*41000))
	}
	return out
}

// block is a non-zero block of an image: the SHA-256 of its content
// (padded with zeros to the block size) and the image bytes it covers.
type block struct {
	sum [32]byte
	n   int64
}

// nonZeroBlocks reads path in blocks of bs, independently of blockindex,
// and returns its non-zero blocks and its block count.
func nonZeroBlocks(t *testing.T, path string, bs int) ([]block, int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []block
	var blocks int64
	buf := make([]byte, bs)
	zero := make([]byte, bs)
	for {
		n, err := io.ReadFull(f, buf)
		if n == 0 {
			break
		}
		clear(buf[n:])
		blocks++
		if !bytes.Equal(buf, zero) {
			out = append(out, block{sum: sha256.Sum256(buf), n: int64(n)})
		}
		if err != nil {
			break
		}
	}
	return out, blocks
}

// expected are the figures an index of images should report, computed
// without blockindex.
type expected struct {
	blocks, zero, entries, unique, bytes int64
	perImage                             map[string]int64 // entries of each image
	sums                                 map[[32]byte]bool
}

func expectIndex(t *testing.T, bs int, images ...string) expected {
	t.Helper()
	e := expected{perImage: map[string]int64{}, sums: map[[32]byte]bool{}}
	for _, img := range images {
		nz, blocks := nonZeroBlocks(t, img, bs)
		distinct := map[[32]byte]bool{}
		for _, b := range nz {
			distinct[b.sum] = true
			e.sums[b.sum] = true
		}
		fi, err := os.Stat(img)
		if err != nil {
			t.Fatal(err)
		}
		e.blocks += blocks
		e.zero += blocks - int64(len(nz))
		e.entries += int64(len(distinct))
		e.perImage[img] = int64(len(distinct))
		e.bytes += fi.Size()
	}
	e.unique = int64(len(e.sums))
	return e
}

// expectCoverage is what lookup of target in an index of bases should
// find: its non-zero blocks and bytes, and those the bases hold.
func expectCoverage(t *testing.T, bs int, target string, bases ...string) blockindex.Coverage {
	t.Helper()
	held := expectIndex(t, bs, bases...).sums
	nz, blocks := nonZeroBlocks(t, target, bs)
	cv := blockindex.Coverage{BlockSize: bs, Blocks: blocks, NonZeroBlocks: int64(len(nz)), ZeroBlocks: blocks - int64(len(nz))}
	for _, b := range nz {
		cv.NonZeroBytes += b.n
		if held[b.sum] {
			cv.FoundBlocks++
			cv.FoundBytes += b.n
		}
	}
	if cv.NonZeroBytes > 0 {
		cv.Fraction = float64(cv.FoundBytes) / float64(cv.NonZeroBytes)
	}
	return cv
}

func checkCoverage(t *testing.T, got, want blockindex.Coverage) {
	t.Helper()
	if got.BlockSize != want.BlockSize || got.Blocks != want.Blocks || got.ZeroBlocks != want.ZeroBlocks || got.NonZeroBlocks != want.NonZeroBlocks ||
		got.NonZeroBytes != want.NonZeroBytes || got.FoundBlocks != want.FoundBlocks || got.FoundBytes != want.FoundBytes || got.Fraction != want.Fraction {
		t.Errorf("coverage of %s at %d:\n got %+v\nwant %+v", got.Image, got.BlockSize, got, want)
	}
}

// snapshot records every file and directory under dir: mode, size,
// mtime and, for files, a digest of the content.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		s := fmt.Sprintf("%v %d %d", fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s += fmt.Sprintf(" %x", sha256.Sum256(b))
		}
		m[p] = s
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func checkUnchanged(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for p, s := range before {
		if after[p] != s {
			t.Errorf("%s changed %s: %q, was %q", what, p, after[p], s)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s created %s", what, p)
		}
	}
}

func decodeJSON(t *testing.T, what, out string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("%s printed %q: %v", what, out, err)
	}
}

// indexImages is a directory of images like a destination host's: two
// ext4 images of different "OSes", a random image whose size is not a
// multiple of 4 KiB, and a qcow2 image that build skips. Outside it are
// images to look up: an exact copy of base.img, a sibling holding
// base.img's files laid out differently, and unrelated random data.
type indexImages struct {
	imgs, base, other, random, qcow2 string
	copyImg, sibling, unrelated      string
}

func newIndexImages(t *testing.T) indexImages {
	t.Helper()
	dir := t.TempDir()
	x := indexImages{imgs: filepath.Join(dir, "imgs")}
	x.base, x.other = filepath.Join(x.imgs, "base.img"), filepath.Join(x.imgs, "other.img")
	x.random, x.qcow2 = filepath.Join(x.imgs, "random.img"), filepath.Join(x.imgs, "disk.qcow2")
	x.copyImg, x.sibling, x.unrelated = filepath.Join(dir, "copy.img"), filepath.Join(dir, "sibling.img"), filepath.Join(dir, "unrelated.img")
	if err := os.MkdirAll(x.imgs, 0o755); err != nil {
		t.Fatal(err)
	}
	files := ext4Files(1, 12)
	a, b := map[string][]byte{}, map[string][]byte{}
	for i, f := range files {
		a[fmt.Sprintf("usr/%02d", i)] = f
		b[fmt.Sprintf("%s/%02d", []string{"x", "y"}[i%2], len(files)-i)] = f
	}
	b["extra"] = randomBytes(99, 300<<10)
	ext4Image(t, x.base, "8M", a)
	ext4Image(t, x.sibling, "12M", b)
	o := map[string][]byte{}
	for i, f := range ext4Files(2, 6) {
		o[fmt.Sprintf("opt/%02d", i)] = f
	}
	for i, f := range files[:4] { // other.img shares some files with base.img
		o[fmt.Sprintf("usr/%02d", i)] = f
	}
	ext4Image(t, x.other, "4M", o)
	writeFile(t, x.random, randomBytes(3, 1<<20+1000))
	writeFile(t, x.qcow2, append([]byte("QFI\xfb"), randomBytes(4, 8192)...))
	writeFile(t, x.unrelated, randomBytes(5, 1<<20))
	b2, err := os.ReadFile(x.base)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, x.copyImg, b2)
	return x
}

// index build over a directory, then show and lookup: every figure is
// checked against one computed by reading the images here.
func TestIndexBuildShowLookup(t *testing.T) {
	x := newIndexImages(t)
	idx := filepath.Join(x.imgs, "n.idx") // inside the directory: build must not index it
	images := []string{x.base, x.other, x.random}
	want := expectIndex(t, 4096, images...)

	code, out, errOut := vmigrate(t, "index", "build", "--out", idx, "--json", x.imgs)
	if code != ExitOK {
		t.Fatalf("index build: exit %d: %s", code, errOut)
	}
	var b indexBuildOutput
	decodeJSON(t, "index build", out, &b)
	u, st := b.Update, b.Stats
	if b.Index != idx || u.Images != 3 || u.New != 3 || u.Rehashed+u.Unchanged+u.Removed != 0 || u.HashedBytes != want.bytes {
		t.Errorf("build: index %s, update %+v; want 3 new images, %d bytes hashed", b.Index, u, want.bytes)
	}
	if len(u.Skipped) != 1 || u.Skipped[0].Path != x.qcow2 || !strings.Contains(u.Skipped[0].Reason, "qcow2") {
		t.Errorf("build skipped %+v, want %s as qcow2", u.Skipped, x.qcow2)
	}
	checkStats := func(what string, st blockindex.Stats) {
		t.Helper()
		if st.BlockSize != 4096 || st.Images != 3 || st.StaleImages != 0 || st.BytesIndexed != want.bytes || st.BlocksHashed != want.blocks ||
			st.ZeroBlocks != want.zero || st.Entries != want.entries || st.UniqueBlocks != want.unique {
			t.Errorf("%s: stats %+v\nwant 3 images, %d bytes, %d blocks, %d zero, %d entries, %d unique", what, st, want.bytes, want.blocks, want.zero, want.entries, want.unique)
		}
		if st.MemoryBytes < 16*st.Entries || st.BytesPerEntry < 16 || st.MemoryPerTiB <= 0 || st.MemoryPerTiBNonZero < st.MemoryPerTiB {
			t.Errorf("%s: memory figures %+v", what, st)
		}
		if tib := float64(st.MemoryBytes) * (1 << 40) / float64(want.bytes); float64(st.MemoryPerTiB) < tib*0.999 || float64(st.MemoryPerTiB) > tib*1.001 {
			t.Errorf("%s: %d bytes per TiB, want %.0f", what, st.MemoryPerTiB, tib)
		}
		if st.HashBytes != want.bytes {
			t.Errorf("%s: last hashing %d bytes, want %d", what, st.HashBytes, want.bytes)
		}
	}
	checkStats("build", st)
	if want.unique >= want.entries || want.zero == 0 {
		t.Fatalf("the images should share blocks and have zero blocks: %d entries, %d unique, %d zero", want.entries, want.unique, want.zero)
	}

	code, out, errOut = vmigrate(t, "index", "show", "--json", idx)
	if code != ExitOK {
		t.Fatalf("index show --json: exit %d: %s", code, errOut)
	}
	var s indexShowOutput
	decodeJSON(t, "index show", out, &s)
	checkStats("show --json", s.Stats)
	if s.Index != idx || !slices.Equal(s.Roots, []string{x.imgs}) || len(s.Stale) != 0 {
		t.Errorf("show: index %s, roots %v, stale %+v", s.Index, s.Roots, s.Stale)
	}
	var paths []string
	for _, im := range s.Images {
		paths = append(paths, im.Path)
		fi, _ := os.Stat(im.Path)
		if fi == nil || im.Size != fi.Size() || im.Blocks != (fi.Size()+4095)/4096 || im.Entries != want.perImage[im.Path] || im.Excluded != "" || im.Added {
			t.Errorf("show: image %+v, want %d entries", im, want.perImage[im.Path])
		}
	}
	if !slices.Equal(paths, []string{x.base, x.other, x.random}) {
		t.Errorf("show lists %v", paths)
	}

	code, text, errOut := vmigrate(t, "index", "show", idx)
	if code != ExitOK {
		t.Fatalf("index show: exit %d: %s", code, errOut)
	}
	for _, line := range []string{
		idx + ", covering " + x.imgs,
		"block size     4K",
		"images         3 current, 0 excluded",
		fmt.Sprintf("entries        %d (%d unique non-zero blocks)", want.entries, want.unique),
		fmt.Sprintf("blocks hashed  %d (%d zero)", want.blocks, want.zero),
		"memory         " + blockindex.FormatBytes(s.Stats.MemoryBytes) + " (",
		blockindex.FormatBytes(s.Stats.MemoryPerTiB) + " per TiB of images",
	} {
		if !strings.Contains(text, line) {
			t.Errorf("show does not say %q", line)
		}
	}
	for _, img := range images {
		var row []string
		for _, l := range strings.Split(text, "\n") {
			if f := strings.Fields(l); len(f) > 0 && f[len(f)-1] == img {
				row = f
			}
		}
		if len(row) < 5 || row[len(row)-2] != strconv.FormatInt(want.perImage[img], 10) {
			t.Errorf("show: row of %s is %q, want %d entries", img, row, want.perImage[img])
		}
	}

	// lookup: an exact copy of an indexed image is all found, unrelated
	// data none of it, a sibling what the blocks say; the image is named
	// with --image and as an argument.
	code, out, errOut = vmigrate(t, "index", "lookup", "--json", "--image", x.copyImg, "--image", x.unrelated, idx, x.sibling, x.random)
	if code != ExitOK {
		t.Fatalf("index lookup: exit %d: %s", code, errOut)
	}
	var cvs []blockindex.Coverage
	decodeJSON(t, "index lookup", out, &cvs)
	if len(cvs) != 4 {
		t.Fatalf("lookup of 4 images printed %d", len(cvs))
	}
	for i, target := range []string{x.copyImg, x.unrelated, x.sibling, x.random} {
		if cvs[i].Image != target {
			t.Errorf("lookup row %d is %s, want %s", i, cvs[i].Image, target)
		}
		checkCoverage(t, cvs[i], expectCoverage(t, 4096, target, images...))
	}
	if cvs[0].Fraction != 1 || cvs[1].FoundBlocks != 0 || cvs[3].Fraction != 1 {
		t.Errorf("copy found %.3f, unrelated %d blocks, an indexed image %.3f", cvs[0].Fraction, cvs[1].FoundBlocks, cvs[3].Fraction)
	}
	if f := cvs[2].Fraction; f < 0.3 || f > 0.99 {
		t.Errorf("sibling found %.3f: the test images are not what they should be", f)
	}
	if cvs[3].NonZeroBytes != 1<<20+1000 {
		t.Errorf("random image: %d non-zero bytes, want the partial last block counted as 1000", cvs[3].NonZeroBytes)
	}

	code, text, errOut = vmigrate(t, "index", "lookup", "--image", x.copyImg, "--image", x.unrelated, idx)
	if code != ExitOK {
		t.Fatalf("index lookup: exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		fmt.Sprintf("100.0%%  %s  %d  %d", blockindex.FormatBytes(cvs[0].NonZeroBytes), cvs[0].FoundBlocks, cvs[0].NonZeroBlocks),
		"0.0%",
		x.copyImg, x.unrelated,
	} {
		if !strings.Contains(strings.Join(strings.Fields(text), "  "), strings.Join(strings.Fields(want), "  ")) {
			t.Errorf("lookup does not say %q", want)
		}
	}
}

// A build over an existing index hashes only what changed, and reports
// so; the index then finds the new content and not the old.
func TestIndexBuildIncremental(t *testing.T) {
	x := newIndexImages(t)
	idx := filepath.Join(t.TempDir(), "n.idx")
	build := func(args ...string) indexBuildOutput {
		t.Helper()
		code, out, errOut := vmigrate(t, append([]string{"index", "build", "--out", idx, "--json"}, args...)...)
		if code != ExitOK {
			t.Fatalf("index build %v: exit %d: %s", args, code, errOut)
		}
		var b indexBuildOutput
		decodeJSON(t, "index build", out, &b)
		return b
	}
	build(x.imgs)
	oldRandom := filepath.Join(t.TempDir(), "old-random.img")
	old, _ := os.ReadFile(x.random)
	writeFile(t, oldRandom, old)

	// Change one block of random.img, and its mtime.
	f, err := os.OpenFile(x.random, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(randomBytes(6, 4096), 5*4096); err != nil {
		t.Fatal(err)
	}
	f.Close()
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(x.random, later, later); err != nil {
		t.Fatal(err)
	}

	// show, before the update: the changed image is excluded.
	code, out, errOut := vmigrate(t, "index", "show", "--json", idx)
	if code != ExitOK {
		t.Fatalf("index show: exit %d: %s", code, errOut)
	}
	var s indexShowOutput
	decodeJSON(t, "index show", out, &s)
	if s.Stats.Images != 2 || s.Stats.StaleImages != 1 || len(s.Stale) != 1 || s.Stale[0].Path != x.random {
		t.Errorf("show of a changed image: stats %+v, stale %+v", s.Stats, s.Stale)
	}

	images := []string{x.base, x.other, x.random}
	want := expectIndex(t, 4096, images...)
	size := int64(1<<20 + 1000)
	b := build("--block-size", "4K") // the index's own block size may be repeated
	if u := b.Update; u.Images != 3 || u.Rehashed != 1 || u.Unchanged != 2 || u.New != 0 || u.Removed != 0 || u.HashedBytes != size {
		t.Errorf("update after one image changed: %+v; want random.img (%d bytes) alone hashed again", u, size)
	}
	if st := b.Stats; st.Images != 3 || st.StaleImages != 0 || st.Entries != want.entries || st.UniqueBlocks != want.unique || st.HashBytes != size {
		t.Errorf("stats after the update %+v, want %d entries, %d unique, %d bytes last hashed", st, want.entries, want.unique, size)
	}
	code, out, errOut = vmigrate(t, "index", "lookup", "--json", idx, x.random, oldRandom)
	if code != ExitOK {
		t.Fatalf("index lookup: exit %d: %s", code, errOut)
	}
	var cvs []blockindex.Coverage
	decodeJSON(t, "index lookup", out, &cvs)
	if len(cvs) != 2 || cvs[0].Fraction != 1 || cvs[1].FoundBlocks != cvs[1].NonZeroBlocks-1 {
		t.Errorf("after the update, lookup of the new and old random.img: %+v; want all of the new, all but one block of the old", cvs)
	}
	checkCoverage(t, cvs[1], expectCoverage(t, 4096, oldRandom, images...))

	// Nothing changed: nothing hashed.
	if u := build().Update; u.Unchanged != 3 || u.HashedBytes != 0 || u.New+u.Rehashed+u.Removed != 0 {
		t.Errorf("update with nothing changed: %+v", u)
	}

	// One image gone, one more root named: the root is added, the gone
	// image removed, the others kept.
	if err := os.Remove(x.other); err != nil {
		t.Fatal(err)
	}
	code, text, errOut := vmigrate(t, "index", "build", "--out", idx, x.unrelated)
	if code != ExitOK {
		t.Fatalf("index build: exit %d: %s", code, errOut)
	}
	if !strings.Contains(text, "3 images (1 new, 0 hashed again, 2 unchanged, 1 removed), 1.0 MiB hashed") {
		t.Errorf("build after a removal and a new root says %q", strings.SplitN(text, "\n", 2)[0])
	}
	code, out, _ = vmigrate(t, "index", "show", "--json", idx)
	decodeJSON(t, "index show", out, &s)
	want = expectIndex(t, 4096, x.base, x.random, x.unrelated)
	if code != ExitOK || !slices.Equal(s.Roots, []string{x.imgs, x.unrelated}) || s.Stats.Images != 3 || s.Stats.Entries != want.entries || s.Stats.UniqueBlocks != want.unique {
		t.Errorf("show after adding a root: roots %v, stats %+v, want %d entries", s.Roots, s.Stats, want.entries)
	}
}

// similarity prints one row per block size, each with the share of the
// target's non-zero bytes found in the bases at that size.
func TestIndexSimilarity(t *testing.T) {
	x := newIndexImages(t)
	sizes := []int{512, 4096, 16384, 65536}
	code, out, errOut := vmigrate(t, "index", "similarity", "--json", "--block-sizes", "512, 4K,16K,64K", x.base, x.sibling)
	if code != ExitOK {
		t.Fatalf("index similarity: exit %d: %s", code, errOut)
	}
	var ms []blockindex.Measurement
	decodeJSON(t, "index similarity", out, &ms)
	if len(ms) != len(sizes) {
		t.Fatalf("%d rows for %d block sizes", len(ms), len(sizes))
	}
	for i, m := range ms {
		if m.BlockSize != sizes[i] || m.Coverage.Image != x.sibling || m.Index.BlockSize != sizes[i] || m.Index.Images != 1 {
			t.Errorf("row %d: block size %d, image %s, index %+v", i, m.BlockSize, m.Coverage.Image, m.Index)
		}
		checkCoverage(t, m.Coverage, expectCoverage(t, sizes[i], x.sibling, x.base))
		if want := expectIndex(t, sizes[i], x.base); m.Index.Entries != want.entries || m.Index.MemoryPerTiB <= 0 {
			t.Errorf("row %d: index %+v, want %d entries", i, m.Index, want.entries)
		}
	}
	if ms[0].Coverage.Fraction < ms[3].Coverage.Fraction {
		t.Errorf("512-byte blocks find less (%.3f) than 64 KiB ones (%.3f)", ms[0].Coverage.Fraction, ms[3].Coverage.Fraction)
	}

	// Text, a directory as BASE, an exact copy as TARGET: 100% at every size.
	code, text, errOut := vmigrate(t, "index", "similarity", "--block-sizes", "4K,64K", x.imgs, x.copyImg)
	if code != ExitOK {
		t.Fatalf("index similarity: exit %d: %s", code, errOut)
	}
	var rows []string
	for _, l := range strings.Split(strings.TrimSpace(text), "\n")[2:] {
		if f := strings.Fields(l); len(f) > 2 {
			rows = append(rows, f[0]+" "+f[1])
		}
	}
	if !slices.Equal(rows, []string{"4K 100.0%", "64K 100.0%"}) {
		t.Errorf("similarity of a copy: rows %q", rows)
	}
}

// Bad input is refused with a usage error that names the problem, and
// leaves every file as it was (no index written or created).
func TestIndexBadInput(t *testing.T) {
	dir := t.TempDir()
	imgs := filepath.Join(dir, "imgs")
	img := filepath.Join(imgs, "a.img")
	writeFile(t, img, randomBytes(1, 64<<10))
	writeFile(t, filepath.Join(imgs, "b.img"), randomBytes(2, 40<<10))
	qcow2 := filepath.Join(dir, "disk.qcow2")
	writeFile(t, qcow2, append([]byte("QFI\xfb"), randomBytes(3, 8192)...))
	idx := filepath.Join(dir, "n.idx")
	if code, _, errOut := vmigrate(t, "index", "build", "--out", idx, imgs); code != ExitOK {
		t.Fatalf("index build: exit %d: %s", code, errOut)
	}
	good, err := os.ReadFile(idx)
	if err != nil {
		t.Fatal(err)
	}
	flipped := slices.Clone(good)
	flipped[len(flipped)/2] ^= 0x40
	corrupt := filepath.Join(dir, "corrupt.idx")
	writeFile(t, corrupt, flipped)
	truncated := filepath.Join(dir, "truncated.idx")
	writeFile(t, truncated, good[:len(good)/2])
	empty := filepath.Join(dir, "empty.idx")
	writeFile(t, empty, nil)
	notIndex := filepath.Join(dir, "not.idx")
	writeFile(t, notIndex, randomBytes(4, 4096))
	missing := filepath.Join(dir, "missing")
	newIdx := filepath.Join(dir, "new.idx")

	cases := []struct {
		args []string
		want string
	}{
		{[]string{"build", "--out", newIdx, missing}, "no such file"},
		{[]string{"build", "--out", newIdx, imgs, missing}, "no such file"},
		{[]string{"build", "--out", newIdx, qcow2}, "qcow2"},
		{[]string{"build", "--out", newIdx}, "name the directories or images"},
		{[]string{"build", imgs}, "out"},
		{[]string{"build", "--out", filepath.Join(missing, "n.idx"), imgs}, "--out: stat " + missing + ": no such file"},
		// Roots named on an existing index must exist and be raw images
		// too: a typo would be kept among its roots for good.
		{[]string{"build", "--out", idx, missing}, "no such file"},
		{[]string{"build", "--out", idx, qcow2}, "qcow2"},
		{[]string{"build", "--out", idx, "--block-size", "8K"}, "--block-size 8192: " + idx + " has blocks of 4096"},
		{[]string{"build", "--out", idx, "--block-size", "512", imgs}, "has blocks of 4096"},
		{[]string{"build", "--out", idx, "--match", "*.img"}, "--match"},
		{[]string{"build", "--out", corrupt, imgs}, "corrupt index file"},
		{[]string{"build", "--out", truncated}, "corrupt index file"},
		{[]string{"build", "--out", empty, imgs}, "corrupt index file"},
		{[]string{"build", "--out", imgs, imgs}, "is a directory"},
		{[]string{"show", corrupt}, "corrupt index file"},
		{[]string{"show", truncated}, "corrupt index file"},
		{[]string{"show", empty}, "corrupt index file"},
		{[]string{"show", "--json", notIndex}, "corrupt index file"},
		{[]string{"show", imgs}, "is a directory"},
		{[]string{"show", missing}, "no such file"},
		{[]string{"show"}, "name one index file"},
		{[]string{"show", idx, corrupt}, "name one index file"},
		{[]string{"lookup", corrupt, img}, "corrupt index file"},
		{[]string{"lookup", "--json", "--image", img, truncated}, "corrupt index file"},
		{[]string{"lookup", idx}, "name an image"},
		{[]string{"lookup"}, "name the index file"},
		{[]string{"lookup", idx, qcow2}, "qcow2"},
		{[]string{"lookup", idx, missing}, "no such file"},
		{[]string{"lookup", idx, imgs}, "not a regular file"},
		// urfave/cli takes flags only before the arguments: one after
		// them must not be read as a file name.
		{[]string{"lookup", idx, "--image", img}, "flags go before"},
		{[]string{"show", idx, "--json"}, "flags go before"},
		{[]string{"build", "--out", newIdx, imgs, "--block-size", "8K"}, "flags go before"},
		{[]string{"similarity", "--block-sizes", "4K", img}, "name BASE"},
		{[]string{"similarity", "--block-sizes", "4K,1000", img, img}, "--block-sizes: block size 1000"},
		{[]string{"similarity", "--block-sizes", "", img, img}, "--block-sizes"},
		{[]string{"similarity", img, qcow2}, "qcow2"},
		{[]string{"similarity", missing, img}, "no such file"},
		{[]string{"similarity", img, "--block-sizes", "4K", img}, "flags go before"},
	}
	for _, bs := range []struct{ flag, want string }{
		{"0", "block size 0:"},
		{"256", "block size 256:"},
		{"1000", "block size 1000:"},
		{"3K", "block size 3072:"},
		{"2M", "block size 2M:"},
		{"1G", "block size 1G:"},
		{"9223372036854775807", "block size 9223372036854775807:"},
		{"-4K", `size "-4K": want a non-negative integer`},
		{"1.5K", `size "1.5K"`},
		{"abc", `size "abc"`},
		{"", `size ""`},
	} {
		cases = append(cases, struct {
			args []string
			want string
		}{[]string{"build", "--out", newIdx, "--block-size", bs.flag, imgs}, "--block-size: " + bs.want})
	}

	for _, tc := range cases {
		before := snapshot(t, dir)
		code, out, errOut := vmigrate(t, append([]string{"index"}, tc.args...)...)
		if code != ExitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("index %q: exit %d, stderr %q; want exit %d and %q", tc.args, code, errOut, ExitUsage, tc.want)
		}
		if out != "" {
			t.Errorf("index %q printed %q", tc.args, out)
		}
		checkUnchanged(t, fmt.Sprintf("index %q", tc.args), before, snapshot(t, dir))
	}
	if b, _ := os.ReadFile(idx); !bytes.Equal(b, good) {
		t.Error("the index file changed")
	}
}
