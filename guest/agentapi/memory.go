package agentapi

import (
	"fmt"
	"math"
	"strconv"
	"strings"
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

// ParseMemAvailable reads MemAvailable from the text of /proc/meminfo, in
// bytes; 0 when the line is missing or malformed.
func ParseMemAvailable(meminfo []byte) int64 {
	for line := range strings.Lines(string(meminfo)) {
		rest, ok := strings.CutPrefix(line, "MemAvailable:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 || kb > math.MaxInt64>>10 {
			return 0
		}
		return kb << 10
	}
	return 0
}
