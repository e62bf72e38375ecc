// Package blockindex is the destination's neighbour index: the
// fingerprints of the fixed-size blocks of disk images that already sit on
// the destination host (other VMs' images, earlier copies of the same VM),
// so that a disk migration can send a block as a reference when the
// destination holds a block with the same content, and the destination can
// read that block locally instead of across the WAN (Lai, Wu and Cheng,
// "Exploiting neighbourhood similarity for VM migration over WAN", 2013).
//
// A block's fingerprint is its BLAKE3-256; its key is the first 8 bytes of
// the fingerprint read little-endian. All-zero blocks are not indexed (a
// migration sends them as zero anyway). Images are raw: a qcow2 image is
// refused when named and skipped when found in a directory (convert it
// with qemu-img convert -O raw to index it). The last block of an image
// whose size is not a multiple of the block size is hashed padded with
// zeros, and Read pads it the same way.
//
// The flow on the destination:
//
//	Build (or Open + Update)   hash the images under some directories, both cores
//	Save                       write the index file atomically
//	Open + Refresh             at migration start: stat every image, exclude changed ones
//	Keys                       sorted unique keys of the current images, announced to the source
//	Read(fp, buf)              for a block the source sent as a reference: read it from an
//	                           image, check its BLAKE3; an image whose block no longer matches
//	                           is excluded from then on (Check reports it)
//	Add                        index the migration's own target image once it completed
//
// In memory the index is one slice of 16-byte entries {key, image, block}
// sorted by key (then image), searched by binary search, and a table of
// images. Each image contributes one entry per distinct non-zero block
// content; a block held by several images has one entry per image, so
// losing one image to a change does not lose the block.
//
// # File format, version 1
//
// All integers are little-endian.
//
//	"VMBI"  u8 version (1)  u8 log2(block size) (9..20)  u16 flags (0)
//	u32 root count (<= 4096), each: u16 length (1..4096), path
//	u16 match length (<= 4096), glob
//	i64 hashing time of the last build or update (ns), i64 bytes it hashed
//	u32 image count (<= 2^24), each:
//	    u16 length (1..4096), path   i64 size   i64 mtime (Unix ns)
//	    u32 blocks (= ceil(size / block size))   u32 zero blocks
//	    u32 entries   u8 flags (1 added by name, 2 to re-hash)
//	entry count (the sum of the images' entries) x
//	    u64 key   u32 image   u32 block
//	    sorted by (key, image), no two equal; block < the image's blocks
//	u32 CRC-32C (Castagnoli) of every byte before it, then end of file
//
// Open checks every count against its limit and against the bytes the
// file has left before it allocates, and rejects a truncated or corrupt
// file with an error wrapping ErrCorrupt.
package blockindex
