package pagecodec

import "github.com/vmigrate/vmigrate/migstream"

// store is the page cache both ends keep in step: slot for slot the same
// contents, because both apply the same operations in the same order (the
// encoder as it sends, the decoder as it receives). It holds the version
// of each page last sent, keyed by block and page number, which is the
// base of the next delta for that page and the target of references from
// other pages with the same contents.
//
// Replacement is CLOCK with unreferenced insertion: a page enters without
// its bit, gets it when it is sent again or referenced, and the hand evicts
// the first slot without one. So pages sent once (most of the first pass)
// go before the working set that keeps coming back. Memory grows in chunks as
// slots are first used, up to the capacity.
type store struct {
	capacity int32
	chunks   [][]byte // chunkPages pages each
	mem      *chunkMem
	owner    []uint64 // the key of the page in each slot
	state    []uint8  // slotFree, slotUsed, slotUsed|slotRef
	byKey    map[uint64]int32
	free     []int32
	next     int32 // slots handed out for the first time so far
	hand     int32

	// changed, if set, hears of every slot whose contents stop being what
	// they were (the encoder drops the slot from its content index).
	changed func(slot int32)

	evictions int64
}

const (
	chunkPages = 256
	slotUsed   = 1
	slotRef    = 2
)

// key packs a block index (< maxBlocks) and a page number (< 2^52).
func key(block uint16, page uint64) uint64 { return page<<10 | uint64(block) }

const (
	maxBlocks = 1 << 10
	maxPage   = 1 << 52
)

func newStore(capacity int32) *store {
	st := &store{capacity: capacity, byKey: make(map[uint64]int32)}
	st.mem = newChunkMem(st)
	return st
}

// release unmaps the store's chunks at once, when its stream has ended
// (the cleanup would otherwise do it at the next GC). The store must not
// be used afterwards.
func (st *store) release() {
	st.chunks = nil
	st.mem.release()
}

// page is the contents of slot s.
func (st *store) page(s int32) []byte {
	c := st.chunks[s/chunkPages]
	o := int(s%chunkPages) * migstream.PageSize
	return c[o : o+migstream.PageSize : o+migstream.PageSize]
}

// lookup returns the slot holding the last version of k.
func (st *store) lookup(k uint64) (int32, bool) {
	s, ok := st.byKey[k]
	return s, ok
}

// valid reports whether s is a slot in use (a reference may name it).
func (st *store) valid(s int32) bool {
	return s >= 0 && s < st.next && st.state[s] != 0
}

func (st *store) touch(s int32) { st.state[s] |= slotRef }

// slotFor returns the slot of k, taking one for it if it has none. The
// caller then writes the page's contents into it.
func (st *store) slotFor(k uint64) int32 {
	if s, ok := st.byKey[k]; ok {
		st.state[s] |= slotRef
		if st.changed != nil {
			st.changed(s)
		}
		return s
	}
	s := st.alloc()
	st.owner[s] = k
	st.state[s] = slotUsed
	st.byKey[k] = s
	return s
}

func (st *store) alloc() int32 {
	if n := len(st.free); n > 0 {
		s := st.free[n-1]
		st.free = st.free[:n-1]
		return s
	}
	if st.next < st.capacity {
		s := st.next
		st.next++
		if int(s/chunkPages) == len(st.chunks) {
			st.chunks = append(st.chunks, st.mem.alloc())
		}
		st.owner = append(st.owner, 0)
		st.state = append(st.state, 0)
		return s
	}
	for {
		s := st.hand
		st.hand = (st.hand + 1) % st.capacity
		if st.state[s]&slotRef != 0 {
			st.state[s] &^= slotRef
			continue
		}
		delete(st.byKey, st.owner[s])
		if st.changed != nil {
			st.changed(s)
		}
		st.evictions++
		return s
	}
}

// drop forgets k's version: the destination's page changed in a way the
// store does not follow (a zero page, QEMU's own XBZRLE or compression).
func (st *store) drop(k uint64) {
	s, ok := st.byKey[k]
	if !ok {
		return
	}
	delete(st.byKey, k)
	st.state[s] = 0
	st.free = append(st.free, s)
	if st.changed != nil {
		st.changed(s)
	}
}

// bytes is the memory the store holds now.
func (st *store) bytes() int64 { return int64(len(st.chunks)) * chunkPages * migstream.PageSize }
