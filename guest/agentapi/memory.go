package agentapi

import (
	"fmt"
	"syscall"
)

// anonMemory maps working sets as private anonymous memory: outside the Go
// heap, so the garbage collector neither scans nor counts it, and returned to
// the kernel at once on Free.
type anonMemory struct{}

func (anonMemory) Alloc(size int64) ([]byte, error) {
	if size <= 0 || int64(int(size)) != size {
		return nil, fmt.Errorf("mmap %d bytes: bad size", size)
	}
	b, err := syscall.Mmap(-1, 0, int(size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		return nil, fmt.Errorf("mmap %d bytes: %w", size, err)
	}
	return b, nil
}

func (anonMemory) Free(b []byte) error { return syscall.Munmap(b) }
