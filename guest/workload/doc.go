// Package workload is the guest's memory workload: a working set whose pages
// are rewritten at a controlled rate and whose content can be checked, page by
// page, after a live migration.
//
// It exists because a migration that "finished" proves nothing about the
// memory that arrived. Every page's content is a pure function of its page
// number and a per-page version counter, so the guest can recompute what each
// page must hold and count the pages that do not:
//
//   - the page body is a pseudo-random fill seeded by the page number, so a
//     page copied from another page, or left zeroed, is wrong;
//   - a window of BytesPerPage bytes at a page-dependent offset encodes the
//     version, so a page rolled back to an older version is wrong;
//   - dirtying a page bumps its version and rewrites only that window, so
//     exactly BytesPerPage bytes change per dirtied page, which is what the
//     delta encoder of the migration stream is measured against.
//
// The dirtier paces its writes against a monotonic clock in small batches and
// reports the rate it achieved (an emulated CPU may not reach the target).
// Verify holds the same lock as the dirtier, so it sees a consistent state:
// dirtying pauses while a verification runs.
//
// With a disk working set (Config.DiskWSSBytes) a second writer, Disk, does
// the same for the guest's disk: it fills the first DiskWSSBytes of the
// device with 4 KiB blocks (generation 1), then rewrites random blocks at
// DiskWritesPerSec with synchronous direct writes. Each block carries a
// header (magic, index, generation, checksum) and a body derived from index
// and generation (see EncodeBlock), and a journal in memory records the
// generation of every write that returned. Disk.Verify reads the blocks back
// past the guest's page cache and tells an intact block from a stale one (a
// lost write), a misplaced one and garbage.
package workload
