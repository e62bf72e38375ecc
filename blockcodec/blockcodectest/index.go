// Package blockcodectest has test doubles for package blockcodec: an
// in-memory block index (a blockcodec.Neighbours) and a builder of NBD
// client streams.
package blockcodectest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/zeebo/blake3"
)

// Index is an in-memory blockcodec.Neighbours: the blocks added to it,
// by their BLAKE3-256.
type Index struct {
	unit int

	mu     sync.Mutex
	blocks map[[32]byte][]byte
	// Fail, if set, makes Read fail for every fingerprint.
	Fail bool
	// Lie, if set, makes Read give the wrong bytes without an error (an
	// index that does not verify).
	Lie   bool
	Reads int
}

// NewIndex returns an empty index of blocks of unit bytes.
func NewIndex(unit int) *Index {
	return &Index{unit: unit, blocks: make(map[[32]byte][]byte)}
}

// Add adds every whole unit of data (from its start).
func (x *Index) Add(data []byte) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for i := 0; i+x.unit <= len(data); i += x.unit {
		b := data[i : i+x.unit]
		x.blocks[blake3.Sum256(b)] = slices.Clone(b)
	}
}

// Len is how many blocks it holds.
func (x *Index) Len() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.blocks)
}

// BlockSize is the unit.
func (x *Index) BlockSize() int { return x.unit }

// Keys are the blocks' keys, sorted and unique.
func (x *Index) Keys() []uint64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	keys := make([]uint64, 0, len(x.blocks))
	for fp := range x.blocks {
		keys = append(keys, binary.LittleEndian.Uint64(fp[:]))
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// Read fills buf with the block whose digest is fp.
func (x *Index) Read(fp [32]byte, buf []byte) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.Reads++
	if len(buf) != x.unit {
		return fmt.Errorf("index: buffer of %d bytes for a unit of %d", len(buf), x.unit)
	}
	if x.Fail {
		return errors.New("index: read failed")
	}
	b, ok := x.blocks[fp]
	if !ok {
		return fmt.Errorf("index: no block %x", fp[:8])
	}
	copy(buf, b)
	if x.Lie {
		buf[0] ^= 1
	}
	return nil
}
