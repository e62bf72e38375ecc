package workload

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func block(index, gen uint64) []byte {
	b := make([]byte, DiskBlockSize)
	EncodeBlock(b, index, gen)
	return b
}

func TestBlockRoundTrip(t *testing.T) {
	for _, c := range []struct{ index, gen uint64 }{{0, 1}, {1, 1}, {4095, 7}, {1 << 40, 1<<64 - 1}} {
		b := block(c.index, c.gen)
		if string(b[:8]) != "VMDSKBLK" {
			t.Errorf("block %d: magic %q", c.index, b[:8])
		}
		i, g, ok := DecodeBlock(b)
		if !ok || i != c.index || g != c.gen {
			t.Errorf("DecodeBlock(EncodeBlock(%d, %d)) = %d, %d, %v", c.index, c.gen, i, g, ok)
		}
		if !bytes.Equal(b, block(c.index, c.gen)) {
			t.Errorf("block %d gen %d: encoding not deterministic", c.index, c.gen)
		}
	}
}

// Every generation rewrites the whole body, and blocks differ from each
// other: neither a delta encoder nor a copy of a neighbour passes for them.
func TestBlockBodiesDiffer(t *testing.T) {
	a, b, c := block(3, 1), block(3, 2), block(4, 1)
	same := func(x, y []byte) (n int) {
		for i := blockHeaderSize; i < DiskBlockSize; i++ {
			if x[i] == y[i] {
				n++
			}
		}
		return n
	}
	// Random bytes agree 1 time in 256: about 16 of 4064.
	if n := same(a, b); n > 64 {
		t.Errorf("generations 1 and 2 of block 3 share %d body bytes", n)
	}
	if n := same(a, c); n > 64 {
		t.Errorf("blocks 3 and 4 share %d body bytes", n)
	}
}

func TestCheckBlock(t *testing.T) {
	flip := func(b []byte, off int) []byte { b[off] ^= 0x20; return b }
	// A block re-encoded with a forged header but its old body: the checksum
	// is recomputed, so only the body check can tell.
	forged := block(5, 2)
	binary.LittleEndian.PutUint64(forged[16:], 3)
	binary.LittleEndian.PutUint32(forged[24:], blockSum(forged))
	tests := []struct {
		name  string
		b     []byte
		index uint64
		want  uint64
		st    BlockState
	}{
		{"fresh", block(5, 9), 5, 9, BlockOK},
		{"stale by one", block(5, 8), 5, 9, BlockStale},
		{"stale populate", block(5, 1), 5, 9, BlockStale},
		{"newer", block(5, 10), 5, 9, BlockNewer},
		{"misplaced", block(6, 9), 5, 9, BlockMisplaced},
		{"never written", make([]byte, DiskBlockSize), 5, 1, BlockCorrupt},
		{"garbage", bytes.Repeat([]byte{0xde, 0xad}, DiskBlockSize/2), 5, 1, BlockCorrupt},
		{"magic damaged", flip(block(5, 9), 2), 5, 9, BlockCorrupt},
		{"generation damaged", flip(block(5, 9), 16), 5, 9, BlockCorrupt},
		{"checksum damaged", flip(block(5, 9), 25), 5, 9, BlockCorrupt},
		{"reserved set", flip(block(5, 9), 30), 5, 9, BlockCorrupt},
		{"body damaged", flip(block(5, 9), 2000), 5, 9, BlockCorrupt},
		{"last byte damaged", flip(block(5, 9), DiskBlockSize-1), 5, 9, BlockCorrupt},
		{"torn: new head, old tail", append(block(5, 9)[:2048:2048], block(5, 8)[2048:]...), 5, 9, BlockCorrupt},
		{"forged header", forged, 5, 3, BlockCorrupt},
		{"short", block(5, 9)[:512], 5, 9, BlockCorrupt},
	}
	for _, tc := range tests {
		if got := CheckBlock(tc.b, tc.index, tc.want); got != tc.st {
			t.Errorf("%s: CheckBlock = %v, want %v", tc.name, got, tc.st)
		}
	}
}

func TestBlockStateString(t *testing.T) {
	if BlockStale.String() != "stale" || BlockState(99).String() != "invalid" {
		t.Errorf("names: %v %v", BlockStale, BlockState(99))
	}
}

func FuzzDecodeBlock(f *testing.F) {
	f.Add(block(0, 1))
	f.Add(block(77, 1<<33))
	f.Add(make([]byte, DiskBlockSize))
	f.Add([]byte("VMDSKBLK"))
	f.Fuzz(func(t *testing.T, b []byte) {
		i, g, ok := DecodeBlock(b)
		if ok && !bytes.Equal(b[:DiskBlockSize], block(i, g)) {
			t.Fatalf("DecodeBlock accepted a block that is not EncodeBlock(%d, %d)", i, g)
		}
	})
}
