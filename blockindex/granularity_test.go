package blockindex

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// Ext4Pair builds two ext4 images in dir holding the same files laid out
// differently: a.img has them in one directory, b.img splits them over two
// directories in the opposite order, adds extra bytes of random data, and
// has another size. The pair stands in for two VM images of one OS; both
// have 4 KiB filesystem blocks, as mkfs.ext4 gives any image past 512 MiB.
func ext4Pair(tb testing.TB, dir string, files []string, extra int, sizeA, sizeB string) (a, b string) {
	tb.Helper()
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		tb.Skip("no mkfs.ext4 (e2fsprogs)")
	}
	da, db := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, d := range []string{da, filepath.Join(db, "x"), filepath.Join(db, "y")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	for i, f := range files {
		copyFile(tb, f, filepath.Join(da, fmt.Sprintf("%04d-%s", i, filepath.Base(f))))
		sub := "x"
		if i%2 == 1 {
			sub = "y"
		}
		copyFile(tb, f, filepath.Join(db, sub, fmt.Sprintf("%04d-%s", len(files)-i, filepath.Base(f))))
	}
	junk := make([]byte, extra)
	r := rand.New(rand.NewPCG(8, 9))
	for i := range junk {
		junk[i] = byte(r.Uint32())
	}
	if err := os.WriteFile(filepath.Join(db, "0000-extra"), junk, 0o644); err != nil {
		tb.Fatal(err)
	}
	a, b = filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	for _, m := range [][3]string{{da, a, sizeA}, {db, b, sizeB}} {
		if out, err := exec.Command(mkfs, "-q", "-F", "-b", "4096", "-d", m[0], m[1], m[2]).CombinedOutput(); err != nil {
			tb.Fatalf("mkfs.ext4 -d %s %s %s: %v\n%s", m[0], m[1], m[2], err, out)
		}
	}
	return a, b
}

func copyFile(tb testing.TB, from, to string) {
	tb.Helper()
	in, err := os.Open(from)
	if err != nil {
		tb.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		tb.Fatal(err)
	}
	if err := out.Close(); err != nil {
		tb.Fatal(err)
	}
}

// regularFiles lists up to limit bytes of regular files matching glob.
func regularFiles(glob string, limit int64) []string {
	ms, _ := filepath.Glob(glob)
	sort.Strings(ms)
	var out []string
	var n int64
	for _, m := range ms {
		fi, err := os.Lstat(m)
		if err != nil || !fi.Mode().IsRegular() || n+fi.Size() > limit {
			continue
		}
		n += fi.Size()
		out = append(out, m)
	}
	return out
}

// TestGranularity sweeps the block size on a small pair of ext4 images
// and logs, for each, the share of b.img's non-zero bytes found in a.img,
// the index's memory per TiB and the hashing rate. (vmigrate index
// similarity runs the same sweep on any images.)
func TestGranularity(t *testing.T) {
	if testing.Short() {
		t.Skip("builds ext4 images")
	}
	files := regularFiles("/usr/bin/*", 24<<20)
	if len(files) < 10 {
		t.Skip("too few files in /usr/bin")
	}
	a, b := ext4Pair(t, t.TempDir(), files, 2<<20, "48M", "64M")
	ms, err := Measure(context.Background(), []string{a}, b, []int{512, 4096, 16384, 65536}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var tab strings.Builder
	fmt.Fprintf(&tab, "%d files; block size, found in a of b's non-zero bytes, index memory per TiB, hashing MB/s\n", len(files))
	for _, m := range ms {
		fmt.Fprintf(&tab, "%6d  %5.1f%%  %10s  %6.0f\n", m.BlockSize, 100*m.Coverage.Fraction, FormatBytes(m.Index.MemoryPerTiB), m.Index.HashMBps)
	}
	t.Log(tab.String())
	if ms[1].Coverage.Fraction < 0.5 {
		t.Errorf("at 4 KiB only %.1f%% of b is in a", 100*ms[1].Coverage.Fraction)
	}
	if ms[0].Coverage.Fraction < ms[3].Coverage.Fraction {
		t.Errorf("512-byte blocks find less than 64 KiB ones")
	}
}
