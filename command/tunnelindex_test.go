package command

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/zeebo/blake3"
	"go.uber.org/zap/zaptest"

	"github.com/vmigrate/vmigrate/blockindex"
)

// randomImage writes an image of n random 4 KiB blocks.
func randomImage(t *testing.T, path string, n int, seed uint64) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n*4096)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A dest end's index takes in a rewritten index file (the images an
// index build added after a migration) and leaves out an image changed
// since it was hashed, without a restart.
func TestLiveIndex(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	randomImage(t, a, 64, 1)
	randomImage(t, b, 64, 2)
	path := filepath.Join(dir, "n.idx")
	ctx := context.Background()
	x, _, err := blockindex.Build(ctx, path, 4096, []string{a}, blockindex.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Save(); err != nil {
		t.Fatal(err)
	}
	l, err := openLiveIndex(path, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if n := len(l.Keys()); n != 64 || l.BlockSize() != 4096 {
		t.Fatalf("%d keys of %d bytes, want 64 of 4096", n, l.BlockSize())
	}

	// vmigrate index build after a migration brought b.img in.
	time.Sleep(10 * time.Millisecond) // a new mtime for the index file
	y, _, err := blockindex.Build(ctx, path, 4096, []string{a, b}, blockindex.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := y.Save(); err != nil {
		t.Fatal(err)
	}
	keys := l.Keys()
	if len(keys) != 128 {
		t.Fatalf("after the rebuild: %d keys, want 128", len(keys))
	}
	fb, _ := os.ReadFile(b)
	fp := blake3.Sum256(fb[:4096])
	buf := make([]byte, 4096)
	if err := l.Read(fp, buf); err != nil || !slices.Equal(buf, fb[:4096]) {
		t.Errorf("read b's first block: %v", err)
	}

	// a.img is rewritten by its VM: its blocks must not be referenced.
	randomImage(t, a, 64, 3)
	if n := len(l.Keys()); n != 64 {
		t.Errorf("after a.img changed: %d keys, want b's 64", n)
	}

	// A rewritten index of another block size is refused, the loaded one kept.
	time.Sleep(10 * time.Millisecond)
	z, _, err := blockindex.Build(ctx, path, 8192, []string{b}, blockindex.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := z.Save(); err != nil {
		t.Fatal(err)
	}
	if n := len(l.Keys()); n != 64 || l.BlockSize() != 4096 {
		t.Errorf("after an 8 KiB rebuild: %d keys of %d bytes, want the loaded 64 of 4096", n, l.BlockSize())
	}
}
