package workload

import (
	"encoding/binary"
	"hash/crc32"
)

// DiskBlockSize is the unit the disk writer writes and Verify checks: one
// page, a multiple of every logical block size O_DIRECT may demand.
const DiskBlockSize = 4096

// Disk block layout (little-endian), for block b at generation g >= 1:
//
//	offset  size  field
//	0       8     magic "VMDSKBLK"
//	8       8     block index b (its offset on the disk / DiskBlockSize)
//	16      8     generation g
//	24      4     CRC-32C of bytes [0,24) and [32,4096)
//	28      4     zero
//	32      4064  body: xorshift64 stream seeded by (b, g)
//
// A block that was never written (zeros), was overwritten by something else
// or torn is corrupt (bad magic or checksum); one carrying another index was
// written at the wrong offset; a well-formed block of an older generation is
// stale (a write that did not arrive); the body changes with every
// generation, so a delta of the old and new block is the whole block.
const (
	blockHeaderSize = 32
	blockMagic      = "VMDSKBLK"
	saltBlock       = 0x626c6f636b626f64 // "blockbod"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// EncodeBlock writes block index's content at generation gen into
// dst[:DiskBlockSize].
func EncodeBlock(dst []byte, index, gen uint64) {
	dst = dst[:DiskBlockSize]
	copy(dst[0:8], blockMagic)
	binary.LittleEndian.PutUint64(dst[8:], index)
	binary.LittleEndian.PutUint64(dst[16:], gen)
	binary.LittleEndian.PutUint32(dst[28:], 0)
	x := mix(mix(index^saltBlock)^gen) | 1
	for i := blockHeaderSize; i < DiskBlockSize; i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(dst[i:], x)
	}
	binary.LittleEndian.PutUint32(dst[24:], blockSum(dst))
}

func blockSum(b []byte) uint32 {
	return crc32.Update(crc32.Checksum(b[:24], castagnoli), castagnoli, b[blockHeaderSize:DiskBlockSize])
}

// BlockState is the verdict on a block read back from the disk.
type BlockState int

const (
	BlockOK        BlockState = iota // the expected index and generation, content intact
	BlockStale                       // intact, but of an older generation: a write was lost
	BlockNewer                       // intact, of a newer generation than expected
	BlockMisplaced                   // intact, but another block's: written at the wrong offset
	BlockCorrupt                     // not a block (never written, overwritten, torn)
)

var blockStateNames = [...]string{"ok", "stale", "newer", "misplaced", "corrupt"}

func (s BlockState) String() string {
	if s < 0 || int(s) >= len(blockStateNames) {
		return "invalid"
	}
	return blockStateNames[s]
}

// DecodeBlock reads the header of b[:DiskBlockSize] and checks the block's
// integrity: ok is false when the magic or the checksum is wrong, or the body
// is not the one index and gen determine.
func DecodeBlock(b []byte) (index, gen uint64, ok bool) {
	if len(b) < DiskBlockSize || string(b[:8]) != blockMagic || binary.LittleEndian.Uint32(b[28:]) != 0 {
		return 0, 0, false
	}
	index = binary.LittleEndian.Uint64(b[8:])
	gen = binary.LittleEndian.Uint64(b[16:])
	if binary.LittleEndian.Uint32(b[24:]) != blockSum(b) {
		return 0, 0, false
	}
	// The checksum catches damage; the body check catches a block encoded
	// by something other than EncodeBlock that happens to sum right.
	x := mix(mix(index^saltBlock)^gen) | 1
	for i := blockHeaderSize; i < DiskBlockSize; i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		if binary.LittleEndian.Uint64(b[i:]) != x {
			return 0, 0, false
		}
	}
	return index, gen, true
}

// CheckBlock judges b, read from block index's offset, against the
// generation the journal recorded for it.
func CheckBlock(b []byte, index, want uint64) BlockState {
	i, g, ok := DecodeBlock(b)
	switch {
	case !ok:
		return BlockCorrupt
	case i != index:
		return BlockMisplaced
	case g < want:
		return BlockStale
	case g > want:
		return BlockNewer
	}
	return BlockOK
}
