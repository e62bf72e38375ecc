package blockindex

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/zeebo/blake3"
)

// ErrStale is wrapped by Read's error when no current image holds the
// block any more: the image changed or is gone since it was hashed, or the
// key matched a different block (a 64-bit key collision).
var ErrStale = errors.New("block no longer in the index")

// entry is one distinct non-zero block of one image.
type entry struct {
	key uint64
	img uint32 // index in Index.images
	blk uint32 // block number in the image
}

func (a entry) less(b entry) bool { return a.key < b.key || a.key == b.key && a.img < b.img }

func cmpEntry(a, b entry) int {
	switch {
	case a.less(b):
		return -1
	case b.less(a):
		return 1
	}
	return 0
}

// image is an indexed image file as it was when hashed.
type image struct {
	path    string
	size    int64
	mtime   int64 // Unix ns
	blocks  uint32
	zero    uint32
	entries uint32
	flags   uint8
	id      uint64 // distinct for each hashing, for the open-file cache
	gone    string // why the image is excluded; "" while current
}

// Index is a neighbour index: see the package comment. Its methods are
// safe for concurrent use; Read is meant to be called from many
// goroutines while Build, Update and Add are rare.
type Index struct {
	path    string // the index file, "" for an index kept in memory only
	bs      int
	workers int

	mu        sync.RWMutex
	roots     []string
	match     string
	images    []image // sorted by path
	entries   []entry // sorted by (key, img); replaced, never changed in place
	nextID    uint64
	hashTime  time.Duration
	hashBytes int64

	fmu   sync.Mutex
	files map[uint64]*os.File // by image id
}

// Options are the choices of Build.
type Options struct {
	// Match is a glob (path.Match syntax) that the base name of a file
	// found under a root directory must match; "" takes every regular file.
	Match string
	// Workers is the number of hashing goroutines; 0 is GOMAXPROCS.
	Workers int
}

// UpdateStats says what Build, Update or Add did.
type UpdateStats struct {
	Images      int           `json:"images"`
	Unchanged   int           `json:"unchanged"`
	New         int           `json:"new"`
	Rehashed    int           `json:"rehashed"`
	Removed     int           `json:"removed"`
	Skipped     []Skipped     `json:"skipped,omitempty"`
	HashedBytes int64         `json:"hashed_bytes"`
	HashTime    time.Duration `json:"hash_ns"`
	HashMBps    float64       `json:"hash_mb_per_s"`
}

// StaleImage is an image that changed since it was hashed.
type StaleImage struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
	// Excluded is whether the index no longer uses the image (after
	// Refresh, or a Read that found a block changed).
	Excluded bool `json:"excluded"`
}

// DefaultBlockSize is the block size vmigrate index build uses. Files in
// ext4 (and xfs, btrfs) images start at 4 KiB boundaries, so two images
// of one OS share their files' 4 KiB blocks wherever the files sit, but a
// larger block is shared only where both images happen to place a file at
// the same offset modulo that size: measured on the lab's OS images, 91 %
// of one image's data is in the other at 4 KiB, 5 % at 16 KiB, 4 % at
// 64 KiB; 512 bytes finds 92 % for 8 times the memory (docs/disks.md).
const DefaultBlockSize = 4096

// ValidBlockSize checks that bs is a power of two from 512 to 1 MiB.
func ValidBlockSize(bs int) error {
	if bs < 512 || bs > 1<<20 || bs&(bs-1) != 0 {
		return fmt.Errorf("block size %d: want a power of two from 512 to 1M", bs)
	}
	return nil
}

// Build hashes the images under roots (directories are walked, files are
// taken as they are) into a new index that Save writes to indexPath. An
// empty indexPath keeps the index in memory only.
func Build(ctx context.Context, indexPath string, blockSize int, roots []string, opt Options) (*Index, UpdateStats, error) {
	if err := ValidBlockSize(blockSize); err != nil {
		return nil, UpdateStats{}, fmt.Errorf("build index: %w", err)
	}
	if opt.Match != "" {
		if _, err := filepath.Match(opt.Match, ""); err != nil || !validPath(opt.Match) {
			return nil, UpdateStats{}, fmt.Errorf("build index: match %q: %v", opt.Match, err)
		}
	}
	x := &Index{bs: blockSize, workers: opt.Workers, match: opt.Match}
	if indexPath != "" {
		p, err := filepath.Abs(indexPath)
		if err != nil {
			return nil, UpdateStats{}, fmt.Errorf("build index: %w", err)
		}
		x.path = p
	}
	if len(roots) == 0 {
		return nil, UpdateStats{}, fmt.Errorf("build index: no directory or image to index")
	}
	if err := x.AddRoots(roots...); err != nil {
		return nil, UpdateStats{}, fmt.Errorf("build index: %w", err)
	}
	cands, skipped, err := discover(x.roots, x.match, x.path, true)
	if err != nil {
		return nil, UpdateStats{}, fmt.Errorf("build index: %w", err)
	}
	st, err := x.apply(ctx, x.plan(cands, nil))
	if err != nil {
		return nil, UpdateStats{}, fmt.Errorf("build index: %w", err)
	}
	st.Skipped = skipped
	return x, st, nil
}

// Open reads an index file and refreshes it: images that changed since
// they were hashed are excluded (Check lists them).
func Open(path string) (*Index, error) {
	p, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open index: %w", err)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("open index: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("open index: %w", err)
	}
	fd, err := decode(f, fi.Size())
	if err != nil {
		return nil, fmt.Errorf("open index %s: %w", p, err)
	}
	x := &Index{path: p, bs: fd.blockSize, roots: fd.roots, match: fd.match, images: fd.images, entries: fd.entries,
		hashTime: time.Duration(fd.hashNanos), hashBytes: fd.hashBytes}
	for i := range x.images {
		im := &x.images[i]
		x.nextID++
		im.id = x.nextID
		if im.flags&flagRehash != 0 {
			im.gone = "excluded before the index was saved"
			im.flags &^= flagRehash
		}
	}
	x.Refresh()
	return x, nil
}

// Path is the index file.
func (x *Index) Path() string { return x.path }

// BlockSize is the size of the blocks the index holds.
func (x *Index) BlockSize() int { return x.bs }

// SetWorkers sets the number of hashing goroutines (0: GOMAXPROCS).
func (x *Index) SetWorkers(n int) { x.mu.Lock(); x.workers = n; x.mu.Unlock() }

// Roots are the directories and files the index covers.
func (x *Index) Roots() []string { x.mu.RLock(); defer x.mu.RUnlock(); return slices.Clone(x.roots) }

// AddRoots adds directories or images for Update to cover.
func (x *Index) AddRoots(roots ...string) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, r := range roots {
		p, err := filepath.Abs(r)
		if err != nil {
			return err
		}
		if !validPath(p) {
			return fmt.Errorf("root %q: not a usable path", r)
		}
		if !slices.Contains(x.roots, p) {
			if len(x.roots) >= maxRoots {
				return fmt.Errorf("more than %d roots", maxRoots)
			}
			x.roots = append(x.roots, p)
		}
	}
	return nil
}

// Update brings the index up to date: images whose size or mtime changed
// (or that were excluded) are hashed again, new files under the roots are
// hashed, vanished images are dropped; the others are kept as they are.
func (x *Index) Update(ctx context.Context) (UpdateStats, error) {
	x.mu.RLock()
	roots, match := x.roots, x.match
	var added []string
	for _, im := range x.images {
		if im.flags&flagAdded != 0 {
			added = append(added, im.path)
		}
	}
	x.mu.RUnlock()
	cands, skipped, err := discover(roots, match, x.path, false)
	if err != nil {
		return UpdateStats{}, fmt.Errorf("update index: %w", err)
	}
	for _, p := range added {
		if c, err := statImage(p); err == nil {
			cands = append(cands, c)
		}
	}
	st, err := x.apply(ctx, x.plan(distinctPaths(cands), nil))
	if err != nil {
		return UpdateStats{}, fmt.Errorf("update index: %w", err)
	}
	st.Skipped = skipped
	return st, nil
}

// Add hashes one more image (again, if it is in the index) and keeps it
// in the index until it is removed from disk. Other images are not looked
// at.
func (x *Index) Add(ctx context.Context, path string) error {
	p, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("index %s: %w", path, err)
	}
	c, err := statImage(p)
	if err != nil {
		return fmt.Errorf("index %s: %w", path, err)
	}
	if p == x.path {
		return fmt.Errorf("index %s: that is the index file", path)
	}
	if _, err := x.apply(ctx, x.plan([]candidate{c}, &p)); err != nil {
		return fmt.Errorf("index %s: %w", path, err)
	}
	return nil
}

// step is what apply does with one image: keep an old one (reuse >= 0)
// or hash a candidate.
type step struct {
	c     candidate
	reuse int
	old   bool // the image was in the index (re-hash, not new)
}

// plan matches candidates with the current images. With only == nil,
// cands is the whole new set of images: an image is kept if unchanged and
// current. Otherwise the current images are all kept but *only, and cands
// (which is *only) is hashed.
func (x *Index) plan(cands []candidate, only *string) []step {
	x.mu.RLock()
	defer x.mu.RUnlock()
	byPath := make(map[string]int, len(x.images))
	for i, im := range x.images {
		byPath[im.path] = i
	}
	var steps []step
	if only != nil {
		for i, im := range x.images {
			if im.path != *only {
				steps = append(steps, step{reuse: i, c: candidate{path: im.path}})
			}
		}
		_, old := byPath[*only]
		steps = append(steps, step{c: cands[0], reuse: -1, old: old})
		slices.SortFunc(steps, func(a, b step) int { return strings.Compare(a.c.path, b.c.path) })
		return steps
	}
	for _, c := range cands {
		i, ok := byPath[c.path]
		if ok {
			im := x.images[i]
			if im.gone == "" && im.size == c.size && im.mtime == c.mtime {
				steps = append(steps, step{c: c, reuse: i})
				continue
			}
		}
		steps = append(steps, step{c: c, reuse: -1, old: ok})
	}
	return steps
}

// apply hashes what the steps say and swaps in the new image table and
// entries. Old entries keep their order (images stay sorted by path, so
// renumbering is monotonic); the new ones are sorted and merged in.
func (x *Index) apply(ctx context.Context, steps []step) (UpdateStats, error) {
	var paths []string
	var sizes []int64
	for _, s := range steps {
		if s.reuse < 0 {
			paths = append(paths, s.c.path)
			sizes = append(sizes, s.c.size)
		}
	}
	x.mu.RLock()
	workers := x.workers
	x.mu.RUnlock()
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	start := time.Now()
	hs, err := hashFiles(ctx, paths, sizes, x.bs, workers, true)
	if err != nil {
		return UpdateStats{}, err
	}
	st := UpdateStats{Images: len(steps), HashTime: time.Since(start)}
	for _, s := range sizes {
		st.HashedBytes += s
	}
	st.HashMBps = mbps(st.HashedBytes, st.HashTime)

	x.mu.Lock()
	defer x.mu.Unlock()
	remap := make([]int64, len(x.images))
	for i := range remap {
		remap[i] = -1
	}
	images := make([]image, 0, len(steps))
	var fresh []entry
	h := 0
	for _, s := range steps {
		n := uint32(len(images))
		if s.reuse >= 0 {
			remap[s.reuse] = int64(n)
			images = append(images, x.images[s.reuse])
			st.Unchanged++
			continue
		}
		r := hs[h]
		h++
		x.nextID++
		flags := uint8(0)
		if s.c.added {
			flags = flagAdded
		}
		images = append(images, image{path: s.c.path, size: s.c.size, mtime: s.c.mtime, blocks: r.blocks, zero: r.zero,
			entries: uint32(len(r.keys)), flags: flags, id: x.nextID})
		for _, k := range r.keys {
			fresh = append(fresh, entry{key: k.key, img: n, blk: k.blk})
		}
		if s.old {
			st.Rehashed++
		} else {
			st.New++
		}
	}
	st.Removed = len(x.images) - st.Unchanged - st.Rehashed
	slices.SortFunc(fresh, cmpEntry)
	kept := 0
	for _, e := range x.entries {
		if remap[e.img] >= 0 {
			kept++
		}
	}
	merged := make([]entry, 0, kept+len(fresh))
	j := 0
	for _, e := range x.entries {
		if remap[e.img] < 0 {
			continue
		}
		e.img = uint32(remap[e.img])
		for j < len(fresh) && fresh[j].less(e) {
			merged = append(merged, fresh[j])
			j++
		}
		merged = append(merged, e)
	}
	merged = append(merged, fresh[j:]...)
	ids := make(map[uint64]bool, len(images))
	for _, im := range images {
		ids[im.id] = true
	}
	x.images, x.entries = images, merged
	if len(paths) > 0 {
		x.hashTime, x.hashBytes = st.HashTime, st.HashedBytes
	}
	x.closeFiles(func(id uint64) bool { return !ids[id] })
	return st, nil
}

func mbps(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / 1e6 / d.Seconds()
}

// Keys returns the sorted, distinct keys of the blocks of the current
// images. The slice is the caller's.
func (x *Index) Keys() []uint64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	live := x.liveLocked()
	out := make([]uint64, 0, len(x.entries)/max(1, len(x.images)))
	for _, e := range x.entries {
		if live[e.img] && (len(out) == 0 || out[len(out)-1] != e.key) {
			out = append(out, e.key)
		}
	}
	return out
}

func (x *Index) liveLocked() []bool {
	live := make([]bool, len(x.images))
	for i, im := range x.images {
		live[i] = im.gone == ""
	}
	return live
}

// first is the position of the first entry with key k or more.
func first(es []entry, k uint64) int {
	return sort.Search(len(es), func(i int) bool { return es[i].key >= k })
}

// Has reports whether a current image holds a block with key k.
func (x *Index) Has(k uint64) bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.hasLocked(k)
}

func (x *Index) hasLocked(k uint64) bool {
	for i := first(x.entries, k); i < len(x.entries) && x.entries[i].key == k; i++ {
		if x.images[x.entries[i].img].gone == "" {
			return true
		}
	}
	return false
}

// location is where a candidate block is.
type location struct {
	id   uint64
	path string
	size int64
	off  int64
}

// Read fills buf (BlockSize bytes) with the block whose BLAKE3-256 is fp,
// read from a current image and checked. An image whose block no longer
// has the key it was indexed under is excluded from then on; a block with
// the key but another fingerprint (a key collision) is left alone. When no
// image has the block, the error wraps ErrStale.
func (x *Index) Read(fp [32]byte, buf []byte) error {
	if len(buf) != x.bs {
		return fmt.Errorf("blockindex: read of %d bytes, the block size is %d", len(buf), x.bs)
	}
	k := Key(fp)
	x.mu.RLock()
	var locs []location
	for i := first(x.entries, k); i < len(x.entries) && x.entries[i].key == k; i++ {
		e := x.entries[i]
		if im := &x.images[e.img]; im.gone == "" {
			locs = append(locs, location{id: im.id, path: im.path, size: im.size, off: int64(e.blk) * int64(x.bs)})
		}
	}
	x.mu.RUnlock()
	var why []string
	for _, l := range locs {
		f, err := x.file(l.id, l.path)
		if err != nil {
			x.exclude(l.id, err.Error())
			why = append(why, err.Error())
			continue
		}
		n, err := f.ReadAt(buf, l.off)
		if n < len(buf) && l.off+int64(n) == l.size {
			err = nil // the image's last block, padded with zeros
		}
		if err != nil {
			if !errors.Is(err, os.ErrClosed) { // closed under us by an update
				x.exclude(l.id, fmt.Sprintf("read at %d: %v", l.off, err))
			}
			why = append(why, fmt.Sprintf("%s: %v", l.path, err))
			continue
		}
		clear(buf[n:])
		sum := blake3.Sum256(buf)
		if sum == fp {
			return nil
		}
		if Key(sum) == k {
			why = append(why, fmt.Sprintf("%s at %d: same key, another block", l.path, l.off))
			continue
		}
		x.exclude(l.id, fmt.Sprintf("block at %d changed since it was hashed", l.off))
		why = append(why, fmt.Sprintf("%s at %d: changed since it was hashed", l.path, l.off))
	}
	if len(why) == 0 {
		why = append(why, "no current image has it")
	}
	return fmt.Errorf("blockindex: block %x: %s: %w", fp[:8], strings.Join(why, "; "), ErrStale)
}

// exclude stops using the image with id (if it is still in the index).
func (x *Index) exclude(id uint64, reason string) {
	x.mu.Lock()
	for i := range x.images {
		if x.images[i].id == id && x.images[i].gone == "" {
			x.images[i].gone = reason
		}
	}
	x.mu.Unlock()
	x.closeFiles(func(i uint64) bool { return i == id })
}

// file returns the open image with id.
func (x *Index) file(id uint64, path string) (*os.File, error) {
	x.fmu.Lock()
	defer x.fmu.Unlock()
	if f := x.files[id]; f != nil {
		return f, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if x.files == nil {
		x.files = make(map[uint64]*os.File)
	}
	x.files[id] = f
	return f, nil
}

func (x *Index) closeFiles(which func(id uint64) bool) {
	x.fmu.Lock()
	defer x.fmu.Unlock()
	for id, f := range x.files {
		if which(id) {
			f.Close()
			delete(x.files, id)
		}
	}
}

// Close closes the images Read opened.
func (x *Index) Close() error {
	x.closeFiles(func(uint64) bool { return true })
	return nil
}

// Check lists the images that changed since they were hashed (by size or
// mtime, or gone), and those the index already excludes. It changes
// nothing.
func (x *Index) Check() []StaleImage {
	x.mu.RLock()
	images := slices.Clone(x.images)
	x.mu.RUnlock()
	var out []StaleImage
	for _, im := range images {
		if im.gone != "" {
			out = append(out, StaleImage{Path: im.path, Reason: im.gone, Excluded: true})
		} else if why := changed(im); why != "" {
			out = append(out, StaleImage{Path: im.path, Reason: why})
		}
	}
	return out
}

// Refresh stats every current image and excludes those that changed since
// they were hashed; it returns every excluded image.
func (x *Index) Refresh() []StaleImage {
	x.mu.RLock()
	images := slices.Clone(x.images)
	x.mu.RUnlock()
	for _, im := range images {
		if im.gone == "" {
			if why := changed(im); why != "" {
				x.exclude(im.id, why)
			}
		}
	}
	return x.Check()
}

// changed says how an image differs from when it was hashed, "" if not.
func changed(im image) string {
	fi, err := os.Stat(im.path)
	switch {
	case err != nil:
		return err.Error()
	case fi.Size() != im.size:
		return fmt.Sprintf("size %d, hashed at %d", fi.Size(), im.size)
	case fi.ModTime().UnixNano() != im.mtime:
		return fmt.Sprintf("modified %s, hashed as of %s", fi.ModTime().Format(time.RFC3339Nano), time.Unix(0, im.mtime).Format(time.RFC3339Nano))
	}
	return ""
}

// Save writes the index file atomically: a temporary file in the same
// directory, synced, renamed over the index. Excluded images are written
// without entries, to be hashed again by the next Update.
func (x *Index) Save() error {
	if x.path == "" {
		return errors.New("save index: the index has no file")
	}
	x.mu.RLock()
	fd := &fileData{blockSize: x.bs, roots: x.roots, match: x.match, hashNanos: int64(x.hashTime), hashBytes: x.hashBytes,
		images: slices.Clone(x.images), entries: x.entries}
	x.mu.RUnlock()
	for i := range fd.images {
		if fd.images[i].gone != "" {
			fd.images[i].flags |= flagRehash
		}
	}
	if err := writeAtomic(x.path, fd); err != nil {
		return fmt.Errorf("save index: %w", err)
	}
	return nil
}

func writeAtomic(path string, fd *fileData) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := encode(tmp, fd); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync() // the rename itself; best effort, some filesystems refuse
		d.Close()
	}
	return nil
}

// Stats describes an index.
type Stats struct {
	BlockSize int `json:"block_size"`
	// Images are the current images, StaleImages the excluded ones.
	Images      int `json:"images"`
	StaleImages int `json:"stale_images"`
	// BytesIndexed and the block counts are those of the current images.
	BytesIndexed int64 `json:"bytes_indexed"`
	BlocksHashed int64 `json:"blocks_hashed"`
	ZeroBlocks   int64 `json:"zero_blocks"`
	// Entries are distinct non-zero blocks per image; UniqueBlocks the
	// distinct non-zero keys over all current images.
	Entries      int64 `json:"entries"`
	UniqueBlocks int64 `json:"unique_blocks"`
	// MemoryBytes is what the entries and the image table take (of every
	// image hashed, current or not); Keys allocates 8 bytes per unique
	// block more while its caller keeps the result.
	MemoryBytes   int64   `json:"memory_bytes"`
	BytesPerEntry float64 `json:"bytes_per_entry"`
	// MemoryPerTiB is MemoryBytes * 2^40 / the bytes of the images hashed;
	// MemoryPerTiBNonZero counts only their non-zero blocks.
	MemoryPerTiB        int64 `json:"memory_per_tib"`
	MemoryPerTiBNonZero int64 `json:"memory_per_tib_nonzero"`
	// HashTime and HashBytes are those of the last Build, Update or Add
	// that hashed something.
	HashTime  time.Duration `json:"hash_ns"`
	HashBytes int64         `json:"hash_bytes"`
	HashMBps  float64       `json:"hash_mb_per_s"`
}

// Stats counts the index.
func (x *Index) Stats() Stats {
	x.mu.RLock()
	defer x.mu.RUnlock()
	st := Stats{BlockSize: x.bs, HashTime: x.hashTime, HashBytes: x.hashBytes, HashMBps: mbps(x.hashBytes, x.hashTime)}
	var allBytes, allNonZero int64
	mem := int64(cap(x.entries))*int64(unsafe.Sizeof(entry{})) + int64(cap(x.images))*int64(unsafe.Sizeof(image{}))
	for _, im := range x.images {
		mem += int64(len(im.path) + len(im.gone))
		allBytes += im.size
		allNonZero += (int64(im.blocks) - int64(im.zero)) * int64(x.bs)
		if im.gone != "" {
			st.StaleImages++
			continue
		}
		st.Images++
		st.BytesIndexed += im.size
		st.BlocksHashed += int64(im.blocks)
		st.ZeroBlocks += int64(im.zero)
		st.Entries += int64(im.entries)
	}
	live := x.liveLocked()
	var last uint64
	for _, e := range x.entries {
		if live[e.img] && (st.UniqueBlocks == 0 || e.key != last) {
			st.UniqueBlocks++
			last = e.key
		}
	}
	st.MemoryBytes = mem
	if n := len(x.entries); n > 0 {
		st.BytesPerEntry = float64(mem) / float64(n)
	}
	if allBytes > 0 {
		st.MemoryPerTiB = int64(float64(mem) * (1 << 40) / float64(allBytes))
	}
	if allNonZero > 0 {
		st.MemoryPerTiBNonZero = int64(float64(mem) * (1 << 40) / float64(allNonZero))
	}
	return st
}

// Image describes one image of the index.
type Image struct {
	Path    string    `json:"path"`
	Size    int64     `json:"size"`
	ModTime time.Time `json:"mtime"`
	Blocks  int64     `json:"blocks"`
	Zero    int64     `json:"zero_blocks"`
	Entries int64     `json:"entries"`
	Added   bool      `json:"added,omitempty"`
	// Excluded says why the index no longer uses the image, "" if it does.
	Excluded string `json:"excluded,omitempty"`
}

// Images lists the images of the index, by path.
func (x *Index) Images() []Image {
	x.mu.RLock()
	defer x.mu.RUnlock()
	out := make([]Image, len(x.images))
	for i, im := range x.images {
		out[i] = Image{Path: im.path, Size: im.size, ModTime: time.Unix(0, im.mtime), Blocks: int64(im.blocks), Zero: int64(im.zero),
			Entries: int64(im.entries), Added: im.flags&flagAdded != 0, Excluded: im.gone}
	}
	return out
}
