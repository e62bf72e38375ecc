//go:build unix && !linux

package pagecodec

import "syscall"

// mapChunk maps a chunk; the pages are faulted in as they are used.
func mapChunk() ([]byte, error) {
	return syscall.Mmap(-1, 0, chunkBytes, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
}
