// Package pagecodec shrinks a QEMU migration stream on its way across the
// tunnel and puts it back together, byte for byte, on the far side: the
// destination QEMU receives exactly what the source QEMU sent, and neither
// knows the codec was there. It is what makes a WAN migration cheap:
// CloudNet's page deltas and content-based redundancy elimination, done
// outside QEMU.
//
// The encoder reads the stream with package migstream. Every RAM page
// (a PAGE record) goes out as the cheapest of
//
//   - zero: the page is all zero bytes;
//   - delta: an XBZRLE-like delta against the version of the same page the
//     encoder sent before (delta.go);
//   - ref: a reference to a slot of the page cache holding the same bytes,
//     checked by the first 8 bytes of the page's BLAKE3 digest;
//   - lz4: the page compressed as an LZ4 block;
//   - zstd: the page compressed as the next block of the stream's one
//     zstd frame, whose window holds the pages compressed before it, so
//     that what pages share is sent once (effort max, effort.go);
//   - seed: a page the dest end held before the stream began and announced
//     when the channel opened (seed.go);
//   - raw: the page itself.
//
// Both ends keep the same page cache (store.go): the version of each page
// last sent, bounded in size, evicted by CLOCK. It is never sent; each end
// builds it from the operations that pass, so a reference costs a slot
// number. QEMU's own ZERO records travel as runs, everything else the
// codec does not change (section headers, device state) as literal bytes.
//
// # Wire format
//
// The encoded stream starts with "VMPC" and a version byte (3), then a
// sequence of operations, each an opcode byte:
//
//	0x01 literal    uvarint n (<= 1 MiB), n stream bytes, written as they are
//	0x02 cache      uvarint slots: the cache size, once, before any page
//	0x03 zero-run   addr, uvarint count-1 (< 2^24): that many ZERO records (fill 0)
//	                for consecutive pages, all but the first CONTINUE
//	0x04 forget     addr: the page changed in a way the cache does not
//	                follow (the literal after it carries QEMU's record)
//	0x10 page-zero  addr
//	0x11 page-ref   addr, uvarint slot, 8 bytes of BLAKE3(page)
//	0x12 page-delta addr, uvarint n (<= 8192), n bytes of delta
//	0x13 page-lz4   addr, uvarint n (<= LZ4 bound of 4096), n bytes
//	0x14 page-raw   addr, 4096 bytes
//	0x15 page-seed  addr, uvarint n: page n of the dest end's seeds (seed.go)
//	0x17 page-zstd  addr, uvarint n (1..4160), n bytes: the next block(s) of
//	                the stream's one zstd frame (the first operation carries
//	                the frame header; window at most 8 MiB), giving one page
//
// where addr says which page: bit 0x80 of the opcode is QEMU's CONTINUE
// flag; without it a u8 length and the RAM block's idstr follow; then a
// zigzag varint, the page number minus the previous addr's page number.
// Blocks are numbered in the order their names first appear, at most
// 1024. A page-* operation becomes one PAGE record; the page enters the
// cache (a zero page leaves it). The decoder rejects anything else: an
// unknown opcode, a length past its bound, a reference to an empty slot or
// with the wrong digest, a delta without a base or out of bounds, a
// compressed page that does not give exactly one page (zstd blocks that
// give more leave the surplus, less than a page, to the next page-zstd),
// a page
// before the cache size, a cache larger than its own limit.
package pagecodec
