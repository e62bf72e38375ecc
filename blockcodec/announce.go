package blockcodec

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
)

// The announcement is what the dest end tells the source end before any
// byte of the server's replies (doc.go):
//
//	"VMBA" u8 version (1)  uvarint unit  uvarint count  count x uvarint key delta
//
// unit is 0 (no index, and then count is 0) or the index's block size;
// the keys are sorted and unique, the first sent as it is, every other as
// the difference to the one before it (never 0). Uniformly spread 64-bit
// keys take 64-log2(count)+1 bits of delta: 7 bytes instead of 8 at a
// million keys, 6 at 2^28 (BenchmarkAnnounce reports the size).
const (
	announceMagic   = "VMBA"
	announceVersion = 1
	// MaxKeys bounds an announcement: 2^28 keys, 1 TiB of 4 KiB blocks or
	// 16 TiB of 64 KiB ones; about 2 GiB of memory at the source end. A
	// dest end with more announces the first MaxKeys.
	MaxKeys = 1 << 28
	// MinUnit and MaxUnit bound the index's block size, the reference
	// unit.
	MinUnit = 512
	MaxUnit = 1 << 20
)

// announcement is what the source end learned from the dest end.
type announcement struct {
	unit int // 0: no index
	keys keySet
}

func validUnit(u int) bool { return u >= MinUnit && u <= MaxUnit && u&(u-1) == 0 }

// appendAnnouncement appends the announcement of keys, at most MaxKeys of
// them, sorted and unique (a copy is sorted if they are not), for an index
// of unit (0 for none).
func appendAnnouncement(b []byte, unit int, keys []uint64) []byte {
	if unit == 0 {
		keys = nil
	}
	if !sortedUnique(keys) {
		keys = slices.Clone(keys)
		slices.Sort(keys)
		keys = slices.Compact(keys)
	}
	keys = keys[:min(len(keys), MaxKeys)]
	b = append(b, announceMagic...)
	b = append(b, announceVersion)
	b = binary.AppendUvarint(b, uint64(unit))
	b = binary.AppendUvarint(b, uint64(len(keys)))
	b = slices.Grow(b, len(keys)*8)
	var prev uint64
	for i, k := range keys {
		if i == 0 {
			b = binary.AppendUvarint(b, k)
		} else {
			b = binary.AppendUvarint(b, k-prev)
		}
		prev = k
	}
	return b
}

func sortedUnique(keys []uint64) bool {
	for i := 1; i < len(keys); i++ {
		if keys[i] <= keys[i-1] {
			return false
		}
	}
	return true
}

// AnnounceError is an announcement the source end refuses, or one that
// never came: the dest end is not this codec, or the reverse stream ended
// first.
type AnnounceError struct {
	Reason string
	Err    error // the read's error, if one ended it
}

func (e *AnnounceError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("blockcodec: announcement from the dest end: %s: %v", e.Reason, e.Err)
	}
	return "blockcodec: announcement from the dest end: " + e.Reason
}

func (e *AnnounceError) Unwrap() error { return e.Err }

// readAnnouncement reads an announcement. Memory grows with the keys
// actually read, never with the count alone.
func readAnnouncement(r io.ByteReader) (*announcement, error) {
	var head [len(announceMagic) + 1]byte
	for i := range head {
		c, err := r.ReadByte()
		if err != nil {
			return nil, &AnnounceError{Reason: "stream ended before it", Err: noEOF(err)}
		}
		head[i] = c
	}
	if string(head[:4]) != announceMagic || head[4] != announceVersion {
		return nil, &AnnounceError{Reason: fmt.Sprintf("header %q, want %q version %d", head[:], announceMagic, announceVersion)}
	}
	unit, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, &AnnounceError{Reason: "unit", Err: noEOF(err)}
	}
	if unit != 0 && !validUnit(int(min(unit, MaxUnit+1))) {
		return nil, &AnnounceError{Reason: fmt.Sprintf("unit of %d bytes, want a power of two from %d to %d", unit, MinUnit, MaxUnit)}
	}
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, &AnnounceError{Reason: "key count", Err: noEOF(err)}
	}
	if n > MaxKeys || unit == 0 && n > 0 {
		return nil, &AnnounceError{Reason: fmt.Sprintf("%d keys for a unit of %d (at most %d, none without a unit)", n, unit, MaxKeys)}
	}
	keys := make([]uint64, 0, min(n, 1<<16))
	var prev uint64
	for i := range n {
		d, err := binary.ReadUvarint(r)
		if err != nil {
			return nil, &AnnounceError{Reason: fmt.Sprintf("key %d of %d", i, n), Err: noEOF(err)}
		}
		k := prev + d
		if i > 0 && (d == 0 || k < prev) {
			return nil, &AnnounceError{Reason: fmt.Sprintf("key %d of %d out of order", i, n)}
		}
		keys = append(keys, k)
		prev = k
	}
	return &announcement{unit: int(unit), keys: newKeySet(keys)}, nil
}

// noEOF turns the end of the stream inside the announcement into
// io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// keySet finds a key among sorted keys: a table of where each value of
// the top bits starts, then a binary search among the few keys that share
// them (hash keys are uniform).
type keySet struct {
	keys  []uint64
	shift uint     // 64 - bits of the table
	start []uint32 // start[t] is the first key whose top bits are >= t
}

func newKeySet(keys []uint64) keySet {
	bits := 0
	for bits < 20 && 1<<bits < len(keys) {
		bits++
	}
	s := keySet{keys: keys, shift: uint(64 - bits), start: make([]uint32, 1<<bits+1)}
	j := 0
	for t := range s.start {
		for j < len(keys) && keys[j]>>s.shift < uint64(t) {
			j++
		}
		s.start[t] = uint32(j)
	}
	return s
}

func (s *keySet) len() int { return len(s.keys) }

func (s *keySet) has(k uint64) bool {
	if len(s.keys) == 0 {
		return false
	}
	t := k >> s.shift // a shift of 64 is 0
	lo, hi := int(s.start[t]), int(s.start[t+1])
	in := s.keys[lo:hi]
	i := sort.Search(len(in), func(i int) bool { return in[i] >= k })
	return i < len(in) && in[i] == k
}

// announceReader reads the announcement off the reverse stream and hands
// the rest on.
func announceReader(src io.Reader) (*announcement, *bufio.Reader, error) {
	br := bufio.NewReaderSize(src, 64<<10)
	a, err := readAnnouncement(br)
	return a, br, err
}
