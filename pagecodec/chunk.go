package pagecodec

import (
	"runtime"
	"sync"
	"syscall"
)

// chunkBytes is one store chunk: chunkPages pages.
const chunkBytes = chunkPages * pageSize

// chunkMem is store memory outside the Go heap: a private anonymous
// mapping populated when made (MAP_POPULATE), so that filling a cache of
// hundreds of MiB costs one kernel call per MiB instead of a page fault
// per page (measured: the faults were a third of the codec's CPU on the
// lab's nested-virtualised host). Mappings are unmapped when the store
// that owns them is unreachable; nothing but the store holds their pages
// past its own life (pages are copied out).
type chunkMem struct {
	mu   sync.Mutex
	maps [][]byte
}

// alloc returns a zeroed chunk, from a mapping or, if mmap fails, the heap.
func (m *chunkMem) alloc() []byte {
	b, err := mapChunk()
	if err != nil {
		return make([]byte, chunkBytes)
	}
	m.mu.Lock()
	m.maps = append(m.maps, b)
	m.mu.Unlock()
	return b
}

func (m *chunkMem) release() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, b := range m.maps {
		syscall.Munmap(b)
	}
	m.maps = nil
}

// newChunkMem returns the chunk memory of st, released when st is
// unreachable (or by store.release, when its stream ends).
func newChunkMem(st *store) *chunkMem {
	m := &chunkMem{}
	runtime.AddCleanup(st, func(m *chunkMem) { m.release() }, m)
	return m
}
