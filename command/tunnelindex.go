package command

import (
	"os"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/vmigrate/vmigrate/blockindex"
)

// liveIndex is a tunnel dest end's neighbour index (tunnel dest
// --disk-index): it serves many migrations, so before each disk channel
// announces its keys it takes in what changed. When the index file was
// rewritten (vmigrate index build after a migration, by a hook or by
// hand) it is opened again; either way every image is stat'ed and those
// that changed since they were hashed are left out, so that no reference
// points at a block that is gone.
type liveIndex struct {
	path string
	log  *zap.Logger

	mu     sync.Mutex
	idx    *blockindex.Index
	logged map[string]bool // images whose exclusion was logged
	mtime  time.Time
	size   int64
}

func openLiveIndex(path string, log *zap.Logger) (*liveIndex, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	idx, err := blockindex.Open(path)
	if err != nil {
		return nil, err
	}
	l := &liveIndex{path: path, log: log, idx: idx, mtime: fi.ModTime(), size: fi.Size(), logged: map[string]bool{}}
	l.logExcluded(idx.Check())
	return l, nil
}

func (l *liveIndex) current() *blockindex.Index {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.idx
}

// BlockSize implements blockcodec.Neighbours; it never changes (a
// rewritten index with another block size is refused).
func (l *liveIndex) BlockSize() int { return l.current().BlockSize() }

// Keys implements blockcodec.Neighbours: the keys of the index as it is
// now on disk, without the images that changed.
func (l *liveIndex) Keys() []uint64 {
	l.mu.Lock()
	if fi, err := os.Stat(l.path); err == nil && (!fi.ModTime().Equal(l.mtime) || fi.Size() != l.size) {
		switch idx, err := blockindex.Open(l.path); {
		case err != nil:
			l.log.Warn("neighbour index: the rewritten index does not open; keeping the one loaded", zap.String("index", l.path), zap.Error(err))
		case idx.BlockSize() != l.idx.BlockSize():
			l.log.Warn("neighbour index: the rewritten index has another block size; keeping the one loaded (restart the dest end to use it)",
				zap.String("index", l.path), zap.Int("loaded", l.idx.BlockSize()), zap.Int("file", idx.BlockSize()))
			idx.Close()
		default:
			// The old index is dropped, not closed: a channel still
			// reading from it would open its files again.
			l.idx = idx
			l.log.Info("neighbour index: reloaded", zap.String("index", l.path), zap.Int("images", len(idx.Images())))
		}
		l.mtime, l.size = fi.ModTime(), fi.Size()
	}
	idx := l.idx
	l.mu.Unlock()
	l.logExcluded(idx.Refresh())
	return idx.Keys()
}

// Read implements blockcodec.Neighbours.
func (l *liveIndex) Read(fp [32]byte, buf []byte) error { return l.current().Read(fp, buf) }

// Close closes the index's image files.
func (l *liveIndex) Close() error { return l.current().Close() }

// logExcluded logs each image left out once.
func (l *liveIndex) logExcluded(st []blockindex.StaleImage) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range st {
		if l.logged[s.Path+"\x00"+s.Reason] {
			continue
		}
		l.logged[s.Path+"\x00"+s.Reason] = true
		l.log.Warn("neighbour index: image left out", zap.String("image", s.Path), zap.String("why", s.Reason))
	}
}
