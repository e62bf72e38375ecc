package pagecodec

import (
	"encoding/binary"
	"math/bits"
)

// pageCompressor writes LZ4 blocks (the format lz4.UncompressBlock reads)
// for one page at a time. A general LZ4 compressor keeps a 64 Ki-entry
// table for inputs of any size, which a 4 KiB page leaves mostly cold;
// this one keeps a 4 Ki-entry table of 16-bit positions, 8 KiB that stay
// in the L1 cache, and gives up as soon as the output stops being smaller
// than the page. BenchmarkCompressPage compares the two.
type pageCompressor struct {
	table [1 << hashBits]uint16
}

const (
	hashBits     = 12
	minMatch     = 4
	mfLimit      = 12 // LZ4: the last match starts at least this far from the end
	lastLiterals = 5  // LZ4: the block ends with at least this many literals
	// skipShift sets how fast the search speeds up through bytes that
	// match nothing: the step is 1 + (literals so far) >> skipShift, as in
	// Snappy. Unlike LZ4's step, which grows by one every 64 misses, it
	// crosses a page of random bytes in about 160 probes instead of 700,
	// and costs text almost nothing, where matches keep the run short.
	skipShift = 5
)

func hash4(v uint32) uint32 { return v * 2654435761 >> (32 - hashBits) }

// compress writes src (at most 64 KiB) as an LZ4 block into dst and
// returns its length, or 0 if the block would not be smaller than limit
// bytes (then dst holds garbage).
func (c *pageCompressor) compress(dst, src []byte, limit int) int {
	n := len(src)
	if n < mfLimit+1 || limit > len(dst) {
		return 0
	}
	clear(c.table[:])
	out := 0
	anchor := 0
	matchLimit := n - lastLiterals
	end := n - mfLimit
	i := 1
	c.table[hash4(binary.LittleEndian.Uint32(src))] = 0
	for i < end {
		seq := binary.LittleEndian.Uint32(src[i:])
		h := hash4(seq)
		cand := int(c.table[h])
		c.table[h] = uint16(i)
		if cand >= i || binary.LittleEndian.Uint32(src[cand:]) != seq {
			i += 1 + (i-anchor)>>skipShift
			continue
		}
		// Extend backwards over equal bytes not yet emitted.
		for i > anchor && cand > 0 && src[i-1] == src[cand-1] {
			i--
			cand--
		}
		// Extend forwards, eight bytes at a time.
		m := i + minMatch
		k := cand + minMatch
		for m+8 <= matchLimit {
			x := binary.LittleEndian.Uint64(src[m:]) ^ binary.LittleEndian.Uint64(src[k:])
			if x != 0 {
				m += bits.TrailingZeros64(x) / 8
				goto extended
			}
			m += 8
			k += 8
		}
		for m < matchLimit && src[m] == src[k] {
			m++
			k++
		}
	extended:
		lit := i - anchor
		ml := m - i - minMatch
		// Token, literal length, literals, offset, match length: the
		// worst case is bounded before writing.
		if out+1+lit/255+1+lit+2+ml/255+1 > limit {
			return 0
		}
		tok := out
		out = putLiterals(dst, out, src[anchor:i])
		binary.LittleEndian.PutUint16(dst[out:], uint16(i-cand))
		out += 2
		if ml >= 15 {
			dst[tok] |= 15
			out = putLen(dst, out, ml-15)
		} else {
			dst[tok] |= byte(ml)
		}
		i = m
		anchor = i
		if i < end {
			// The position two back starts a likely match too.
			c.table[hash4(binary.LittleEndian.Uint32(src[i-2:]))] = uint16(i - 2)
		}
	}
	lit := n - anchor
	if out+1+lit/255+1+lit > limit {
		return 0
	}
	return putLiterals(dst, out, src[anchor:])
}

// putLiterals writes a sequence's token (its literal length; the caller
// adds the match length) and its literals at dst[out:].
func putLiterals(dst []byte, out int, lit []byte) int {
	tok := out
	out++
	if len(lit) >= 15 {
		dst[tok] = 15 << 4
		out = putLen(dst, out, len(lit)-15)
	} else {
		dst[tok] = byte(len(lit) << 4)
	}
	return out + copy(dst[out:], lit)
}

// putLen writes an LZ4 length continuation: 255s, then the rest.
func putLen(dst []byte, out, v int) int {
	for v >= 255 {
		dst[out] = 255
		out++
		v -= 255
	}
	dst[out] = byte(v)
	return out + 1
}
