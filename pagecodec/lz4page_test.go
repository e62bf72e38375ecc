package pagecodec

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/pierrec/lz4/v4"
)

func testPages() map[string][]byte {
	rng := rand.New(rand.NewPCG(3, 3))
	text := bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog; "), 100)[:pageSize]
	random := make([]byte, pageSize)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	mixed := bytes.Clone(random)
	copy(mixed[1000:], text[:2000])
	runs := make([]byte, pageSize)
	for i := range runs {
		runs[i] = byte(i / 700)
	}
	return map[string][]byte{"text": text, "random": random, "mixed": mixed, "runs": runs, "zero": make([]byte, pageSize)}
}

func TestCompressPageDecodesWithLZ4(t *testing.T) {
	var c pageCompressor
	dst := make([]byte, lz4Bound)
	for name, p := range testPages() {
		n := c.compress(dst, p, pageSize-1)
		if name == "random" {
			if n != 0 {
				t.Errorf("random page compressed to %d bytes", n)
			}
			continue
		}
		if n == 0 {
			t.Errorf("%s: not compressed", name)
			continue
		}
		out := make([]byte, pageSize)
		m, err := lz4.UncompressBlock(dst[:n], out)
		if err != nil || m != pageSize || !bytes.Equal(out, p) {
			t.Errorf("%s: lz4 gives back %d bytes, err %v, equal %v", name, m, err, bytes.Equal(out, p))
		}
		t.Logf("%s: %d bytes", name, n)
	}
}

func FuzzCompressPage(f *testing.F) {
	for _, p := range testPages() {
		f.Add(p[:1000], uint16(100))
	}
	f.Fuzz(func(t *testing.T, seed []byte, pattern uint16) {
		// A page from the seed, repeated with variations, so that there
		// are matches to find.
		p := make([]byte, pageSize)
		if len(seed) == 0 {
			seed = []byte{0}
		}
		for i := range p {
			p[i] = seed[i%len(seed)]
			if pattern != 0 && i%int(pattern) == 0 {
				p[i] ^= byte(i)
			}
		}
		var c pageCompressor
		dst := make([]byte, lz4Bound)
		n := c.compress(dst, p, pageSize-1)
		if n == 0 {
			return
		}
		out := make([]byte, pageSize)
		m, err := lz4.UncompressBlock(dst[:n], out)
		if err != nil || m != pageSize || !bytes.Equal(out, p) {
			t.Fatalf("round trip failed: %d bytes, %v", m, err)
		}
	})
}

func BenchmarkCompressPage(b *testing.B) {
	for name, p := range testPages() {
		b.Run(name+"/ours", func(b *testing.B) {
			var c pageCompressor
			dst := make([]byte, lz4Bound)
			b.SetBytes(pageSize)
			for b.Loop() {
				c.compress(dst, p, pageSize-1)
			}
		})
		b.Run(name+"/pierrec", func(b *testing.B) {
			var c lz4.Compressor
			dst := make([]byte, lz4Bound)
			b.SetBytes(pageSize)
			for b.Loop() {
				c.CompressBlock(p, dst)
			}
		})
	}
}
