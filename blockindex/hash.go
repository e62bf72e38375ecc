package blockindex

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"

	"github.com/zeebo/blake3"
)

const (
	// unitBytes is how much of an image one worker hashes at a time, so a
	// single large image still keeps every core busy.
	unitBytes = 64 << 20
	// readBytes is the size of one read.
	readBytes = 4 << 20
)

// Key is the key of a fingerprint: its first 8 bytes, little-endian.
func Key(fp [32]byte) uint64 { return binary.LittleEndian.Uint64(fp[:8]) }

// blockKey is the key of one non-zero block of an image.
type blockKey struct {
	key uint64
	blk uint32
}

// hashed is what hashing one image found.
type hashed struct {
	keys   []blockKey // non-zero blocks, by block number; by key and distinct if dedup
	zero   uint32
	blocks uint32
}

// unit is a range of one image for one worker.
type unit struct {
	file     int
	off, end int64
	keys     []blockKey
	zero     uint32
}

// hashFiles hashes the blocks of files (path and size as stat'ed before)
// with workers goroutines. With dedup, each image's keys are sorted and an
// image's repeated content keeps only its first block. A file that shrinks
// while it is hashed reads as zeros past its end (its changed mtime makes
// it stale at the next Refresh).
func hashFiles(ctx context.Context, paths []string, sizes []int64, bs, workers int, dedup bool) ([]hashed, error) {
	var units []*unit
	per := int64(unitBytes / bs * bs)
	for i, size := range sizes {
		if blockCount(size, bs) > 1<<32-1 {
			return nil, fmt.Errorf("hash %s: %d bytes is more than 2^32 blocks of %d", paths[i], size, bs)
		}
		for off := int64(0); off < size; off += per {
			units = append(units, &unit{file: i, off: off, end: min(off+per, size)})
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan *unit)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	for range max(1, min(workers, len(units))) {
		wg.Add(1)
		go func() { // exits when next is closed or the first error cancels ctx
			defer wg.Done()
			buf := make([]byte, max(readBytes/bs*bs, bs))
			for u := range next {
				if err := hashUnit(ctx, u, paths[u.file], bs, buf); err != nil {
					select {
					case errc <- err:
					default:
					}
					cancel()
				}
			}
		}()
	}
feed:
	for _, u := range units {
		select {
		case next <- u:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errc:
		return nil, err
	default:
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([]hashed, len(paths))
	for i, size := range sizes {
		out[i].blocks = uint32(blockCount(size, bs))
	}
	for _, u := range units {
		h := &out[u.file]
		h.keys = append(h.keys, u.keys...)
		h.zero += u.zero
		u.keys = nil
	}
	if dedup {
		for i := range out {
			out[i].keys = distinct(out[i].keys)
		}
	}
	return out, nil
}

// distinct sorts keys by key and keeps the first block of each key.
func distinct(keys []blockKey) []blockKey {
	slices.SortFunc(keys, func(a, b blockKey) int {
		if a.key != b.key {
			if a.key < b.key {
				return -1
			}
			return 1
		}
		return int(int64(a.blk) - int64(b.blk))
	})
	keys = slices.CompactFunc(keys, func(a, b blockKey) bool { return a.key == b.key })
	return slices.Clip(keys)
}

var zeroBlock [1 << 20]byte

func hashUnit(ctx context.Context, u *unit, path string, bs int, buf []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("hash %s: %w", path, err)
	}
	defer f.Close()
	u.keys = make([]blockKey, 0, (u.end-u.off)/int64(bs)+1)
	for off := u.off; off < u.end; {
		if err := ctx.Err(); err != nil {
			return err
		}
		want := int(min(int64(len(buf)), u.end-off))
		n, err := f.ReadAt(buf[:want], off)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("hash %s: %w", path, err)
		}
		want = (want + bs - 1) / bs * bs // the last block, padded; len(buf) is a multiple of bs
		clear(buf[n:want])               // and past the end of a file that shrank
		for p := 0; p < want; p += bs {
			b := buf[p : p+bs]
			blk := uint32((off + int64(p)) / int64(bs))
			if bytes.Equal(b, zeroBlock[:bs]) {
				u.zero++
				continue
			}
			fp := blake3.Sum256(b)
			u.keys = append(u.keys, blockKey{key: Key(fp), blk: blk})
		}
		off += int64(want)
	}
	return nil
}
