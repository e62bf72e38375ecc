package blockindex

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"time"
)

// Coverage is how much of an image the index holds: the dedup a migration
// of that image would get from its neighbours.
type Coverage struct {
	Image     string `json:"image"`
	BlockSize int    `json:"block_size"`
	Blocks    int64  `json:"blocks"`
	// ZeroBlocks are sent as zero whatever the index holds.
	ZeroBlocks    int64 `json:"zero_blocks"`
	NonZeroBlocks int64 `json:"nonzero_blocks"`
	NonZeroBytes  int64 `json:"nonzero_bytes"`
	// FoundBlocks are the non-zero blocks whose key a current image holds.
	FoundBlocks int64 `json:"found_blocks"`
	FoundBytes  int64 `json:"found_bytes"`
	// Fraction is FoundBytes / NonZeroBytes.
	Fraction float64 `json:"fraction"`
	// DistinctBlocks are the distinct non-zero contents of the image,
	// DistinctFound those the index holds.
	DistinctBlocks int64         `json:"distinct_blocks"`
	DistinctFound  int64         `json:"distinct_found"`
	HashTime       time.Duration `json:"hash_ns"`
	HashMBps       float64       `json:"hash_mb_per_s"`
}

// Coverage hashes image with the index's block size and counts its
// non-zero blocks that the current images of the index hold (by key). If
// image is itself in the index it covers itself.
func (x *Index) Coverage(ctx context.Context, image string) (Coverage, error) {
	p, err := filepath.Abs(image)
	if err != nil {
		return Coverage{}, fmt.Errorf("coverage of %s: %w", image, err)
	}
	c, err := statImage(p)
	if err != nil {
		return Coverage{}, fmt.Errorf("coverage of %s: %w", image, err)
	}
	x.mu.RLock()
	workers := x.workers
	x.mu.RUnlock()
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	start := time.Now()
	hs, err := hashFiles(ctx, []string{p}, []int64{c.size}, x.bs, workers, false)
	if err != nil {
		return Coverage{}, fmt.Errorf("coverage of %s: %w", image, err)
	}
	cv := Coverage{Image: p, BlockSize: x.bs, HashTime: time.Since(start)}
	cv.HashMBps = mbps(c.size, cv.HashTime)
	h := hs[0]
	cv.Blocks, cv.ZeroBlocks, cv.NonZeroBlocks = int64(h.blocks), int64(h.zero), int64(len(h.keys))
	lastLen := c.size - (int64(h.blocks)-1)*int64(x.bs)
	found := make(map[uint64]bool, len(h.keys))
	x.mu.RLock()
	for _, k := range h.keys {
		n := int64(x.bs)
		if int64(k.blk) == int64(h.blocks)-1 {
			n = lastLen
		}
		cv.NonZeroBytes += n
		hit, seen := found[k.key]
		if !seen {
			hit = x.hasLocked(k.key)
			found[k.key] = hit
			cv.DistinctBlocks++
			if hit {
				cv.DistinctFound++
			}
		}
		if hit {
			cv.FoundBlocks++
			cv.FoundBytes += n
		}
	}
	x.mu.RUnlock()
	if cv.NonZeroBytes > 0 {
		cv.Fraction = float64(cv.FoundBytes) / float64(cv.NonZeroBytes)
	}
	return cv, nil
}

// Measurement is one row of a block-size sweep: an index of some base
// images and how much of a target image it covers.
type Measurement struct {
	BlockSize int      `json:"block_size"`
	Index     Stats    `json:"index"`
	Coverage  Coverage `json:"coverage"`
}

// Measure builds an in-memory index of bases with each block size and
// measures its coverage of target: the sweep that picks the granularity.
func Measure(ctx context.Context, bases []string, target string, blockSizes []int, opt Options) ([]Measurement, error) {
	var out []Measurement
	for _, bs := range blockSizes {
		x, _, err := Build(ctx, "", bs, bases, opt)
		if err != nil {
			return nil, fmt.Errorf("measure at %d: %w", bs, err)
		}
		cv, err := x.Coverage(ctx, target)
		if err != nil {
			return nil, fmt.Errorf("measure at %d: %w", bs, err)
		}
		out = append(out, Measurement{BlockSize: bs, Index: x.Stats(), Coverage: cv})
		x.Close()
	}
	return out, nil
}

// FormatBytes renders n in binary units: 512 B, 4.0 KiB, 1.5 GiB.
func FormatBytes(n int64) string {
	const units = "KMGTPE"
	if n < 1024 && n > -1024 {
		return fmt.Sprintf("%d B", n)
	}
	f, u := float64(n)/1024, 0
	for (f >= 1024 || f <= -1024) && u < len(units)-1 {
		f /= 1024
		u++
	}
	return fmt.Sprintf("%.1f %ciB", f, units[u])
}
