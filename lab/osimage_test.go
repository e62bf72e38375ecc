package lab_test

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/vmigrate/vmigrate/blockindex"
	"github.com/vmigrate/vmigrate/lab"
	"github.com/vmigrate/vmigrate/lab/labtest"
)

// The two OS images are valid ext4 filesystems, share most of their
// blocks at 4 KiB and little at 64 KiB (why the index uses 4 KiB blocks:
// docs/disks.md), and a second build returns the cached images.
func TestOSImages(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads Debian packages and builds two images")
	}
	if os.Geteuid() != 0 && !labtest.Required() {
		t.Skip("dpkg-deb -x as a user loses file owners; run as root")
	}
	ctx := context.Background()
	o := lab.OSImageOptions{CacheDir: labtest.CacheDir(), Log: testWriter{t}}
	imgs, err := lab.BuildOSImages(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	for v, p := range imgs.Images {
		fi, err := os.Stat(p)
		if err != nil || fi.Size() != imgs.Sizes[v] {
			t.Fatalf("variant %d: %v, size %v, want %d", v, err, fi, imgs.Sizes[v])
		}
		if out, err := exec.Command("e2fsck", "-fn", p).CombinedOutput(); err != nil {
			t.Errorf("e2fsck -fn %s: %v\n%s", p, err, out)
		}
		if imgs.FileBytes[v] < 500<<20 {
			t.Errorf("variant %d holds %d bytes of files, want an OS's worth (> 500 MiB)", v, imgs.FileBytes[v])
		}
	}
	if imgs.Sizes != [2]int64{2 << 30, 2<<30 + 512<<20} {
		t.Errorf("sizes %v", imgs.Sizes)
	}
	own := map[int]int{}
	for _, p := range imgs.Packages {
		if p.Version == "" {
			t.Errorf("package %s has no version", p.Name)
		}
		if len(p.Variants) == 1 {
			own[p.Variants[0]]++
		}
	}
	if own[0] == 0 || own[1] == 0 {
		t.Errorf("each variant should have a package of its own: %v", own)
	}

	ms, err := blockindex.Measure(ctx, []string{imgs.Images[1]}, imgs.Images[0], []int{4096, 65536}, blockindex.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		t.Logf("block %6d: %.1f%% of variant 0's non-zero bytes are in variant 1", m.BlockSize, 100*m.Coverage.Fraction)
	}
	if f := ms[0].Coverage.Fraction; f < 0.8 || f > 0.99 {
		t.Errorf("at 4 KiB %.1f%% of variant 0 is in variant 1, want most but not all (shared OS, own packages and bytes)", 100*f)
	}
	if ms[1].Coverage.Fraction > ms[0].Coverage.Fraction/2 {
		t.Errorf("at 64 KiB %.1f%% found, not far below 4 KiB's %.1f%%: files are 4 KiB aligned, the doc's reason for 4 KiB no longer holds",
			100*ms[1].Coverage.Fraction, 100*ms[0].Coverage.Fraction)
	}

	start := time.Now()
	again, err := lab.BuildOSImages(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if again.Images != imgs.Images || again.Key != imgs.Key {
		t.Errorf("second build: %v, want the cached %v", again.Images, imgs.Images)
	}
	t.Logf("cached build: %v", time.Since(start))
}

func TestOSImagesBadSize(t *testing.T) {
	dir := t.TempDir()
	for _, size := range []int64{1 << 20, 1<<30 + 1} {
		if _, err := lab.BuildOSImages(context.Background(), lab.OSImageOptions{CacheDir: dir, Size: size}); err == nil {
			t.Errorf("size %d accepted", size)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("a refused build left %d entries in the cache", len(ents))
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
