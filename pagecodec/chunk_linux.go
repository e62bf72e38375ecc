package pagecodec

import "syscall"

// mapChunk maps a chunk populated at once (MAP_POPULATE).
func mapChunk() ([]byte, error) {
	return syscall.Mmap(-1, 0, chunkBytes, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_POPULATE)
}
