package pagecodec

import (
	"encoding/binary"
	"errors"
	"math/bits"
)

// A delta turns the version of a page the destination holds into the new
// one. Like QEMU's XBZRLE (migration/xbzrle.c) it is a sequence of pairs
//
//	uvarint unchanged, uvarint n (>= 1), n new bytes
//
// with the trailing unchanged run left out, so an identical page is the
// empty delta. Unlike XBZRLE it merges unchanged gaps shorter than
// mergeGap into the changed run (a pair costs at least two bytes), takes
// standard uvarints, and starts with a zero unchanged count only when the
// first byte changed.
const mergeGap = 3

var errDelta = errors.New("malformed page delta")

// appendDelta appends the delta from old to cur and reports whether it
// stayed within limit bytes of output. Both pages are PageSize long.
func appendDelta(dst, old, cur []byte, limit int) ([]byte, bool) {
	start := len(dst)
	n := len(cur)
	i := 0
	for i < n {
		// The next changed byte, a word at a time.
		j := i
		for j+8 <= n {
			x := binary.LittleEndian.Uint64(old[j:]) ^ binary.LittleEndian.Uint64(cur[j:])
			if x != 0 {
				j += bits.TrailingZeros64(x) / 8
				goto found
			}
			j += 8
		}
		for j < n && old[j] == cur[j] {
			j++
		}
		if j == n {
			break
		}
	found:
		// The end of the changed run, swallowing short unchanged gaps.
		k := j + 1
		for k < n {
			if old[k] != cur[k] {
				k++
				continue
			}
			g := k + 1
			for g < n && g-k < mergeGap && old[g] == cur[g] {
				g++
			}
			if g == n || g-k >= mergeGap {
				break
			}
			k = g
		}
		dst = binary.AppendUvarint(dst, uint64(j-i))
		dst = binary.AppendUvarint(dst, uint64(k-j))
		dst = append(dst, cur[j:k]...)
		if len(dst)-start > limit {
			return dst, false
		}
		i = k
	}
	return dst, true
}

// applyDelta rewrites page in place by delta, refusing any delta that
// reads or writes out of bounds or breaks the encoding's rules.
func applyDelta(page, delta []byte) error {
	pos := 0
	first := true
	for len(delta) > 0 {
		z, n := binary.Uvarint(delta)
		if n <= 0 {
			return errDelta
		}
		delta = delta[n:]
		c, n := binary.Uvarint(delta)
		if n <= 0 || c == 0 {
			return errDelta
		}
		delta = delta[n:]
		if z == 0 && !first {
			return errDelta
		}
		first = false
		if z > uint64(len(page)-pos) || c > uint64(len(page)-pos)-z || c > uint64(len(delta)) {
			return errDelta
		}
		pos += int(z)
		pos += copy(page[pos:pos+int(c)], delta[:c])
		delta = delta[c:]
	}
	return nil
}
