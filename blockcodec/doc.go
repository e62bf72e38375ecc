// Package blockcodec shrinks the NBD traffic of a disk's mirror on its
// way across the tunnel and puts it back together, byte for byte, on the
// far side: the destination's NBD server receives exactly what QEMU's NBD
// client sent, and neither knows the codec was there. It is what makes a
// disk cheap to move over a WAN: zero blocks cost a few bytes, blocks the
// destination already holds (a base image, an earlier copy) cost a
// reference, and the rest is compressed.
//
// # Message flow
//
// QEMU's blockdev-mirror writes into an NBD client whose socket is the
// tunnel's source end; the channel ("disk:vda+nbd1") reaches the dest
// end, which connects to the destination QEMU's NBD server. On the
// channel:
//
//	source end                                   dest end
//	  ToPeer:  client bytes ── encode ──────────▶  ToLocal: decode ──▶ NBD server
//	  ToLocal: ◀── strip the announcement ───────  ToPeer:  announcement, then
//	           the server's replies ──▶ client              the server's replies
//
// The dest end's first bytes on the reverse stream are its announcement
// (announce.go): the reference unit and the keys of the blocks its index
// (Config.Index, a Neighbours) holds. The source end strips it and passes
// the server's replies on unchanged, so a write is acknowledged only once
// the destination has written it, and FLUSH, TRIM, WRITE_ZEROES and DISC
// keep their meaning. The encoder does not wait for the announcement to
// send the handshake; only the first write waits for it (at most 30 s, a
// stream that ends before it is an error).
//
// The encoder parses the client's side only (nbd.go): the 4 bytes of
// client flags, then options (IHAVEOPT, option, length <= 64 KiB, data)
// until a request magic comes, then request headers, simple (28 bytes)
// or extended (32 bytes, NBD_OPT_EXTENDED_HEADERS). NBD_CMD_WRITE is
// followed by Length bytes of payload, and so, with extended headers, is
// any command with NBD_CMD_FLAG_PAYLOAD_LEN. Everything but a write's
// payload goes out as literal bytes. A write's payload (at most 32 MiB,
// QEMU's NBD_MAX_BUFFER_SIZE; a larger one fails the encoder) is cut at
// disk offsets aligned to the unit U (the index's block size, or
// Config.BlockSize without an index) and each piece is
//
//   - zero: all zero bytes (consecutive ones merge into one record);
//   - ref: a whole unit whose BLAKE3-256 key (the first 8 bytes, little
//     endian) the dest end announced, sent as the full 32-byte digest;
//   - data: anything else, consecutive pieces grouped into up to
//     Config.BlockSize bytes, each group sent as the smallest of an LZ4
//     block, raw DEFLATE (Config.Deflate) and the bytes themselves.
//
// A client stream the encoder cannot parse (an unknown magic, an option
// past its bound, TLS after NBD_OPT_STARTTLS) is not refused: the encoder
// passes the rest of it through as literals, flushing after every read,
// and says why in Stats.Fallback. So does a payload past 32 MiB (the
// parser refuses it; QEMU's server drops such a client anyway) and a
// stream cut in the middle of an item: the server sees what the client
// sent, and the migration fails or not as it would without the codec.
// The decoder is strict.
//
// # Wire format
//
// Source to dest, the encoded stream starts with "VMBC" and a version
// byte (1), then a sequence of operations, each an opcode byte:
//
//	0x01 literal  uvarint n (1..1 MiB), n client bytes, written as they are
//	0x02 unit     uvarint U: the reference unit, once, before the first
//	              ref; it must be the dest end's index's block size
//	0x03 write    the NBD_CMD_WRITE header, 28 bytes (magic 0x25609513)
//	              or 32 (magic 0x21e41c71) as the client sent it, with a
//	              Length of 1..32 MiB; then records that add up to Length:
//
//	0x10 zero     uvarint n (1..left): n zero bytes
//	0x11 ref      32 bytes: the BLAKE3-256 of a unit of U bytes (U <= left)
//	              the dest end reads from its index
//	0x12 lz4      uvarint n (1..min(left, 1 MiB)), uvarint c (1..LZ4 bound
//	              of n), c bytes of LZ4 block that give exactly n bytes
//	0x13 deflate  uvarint n (1..min(left, 1 MiB)), uvarint c (1..n), c bytes
//	              of raw DEFLATE (RFC 1951) that end exactly after n bytes
//	0x14 raw      uvarint n (1..min(left, 1 MiB)), n bytes
//
// Dest to source, the reverse stream starts with the announcement:
//
//	"VMBA" u8 version (1)  uvarint U (0: no index)  uvarint count (<= 2^28,
//	0 without an index)  count x uvarint: the first key, then each key
//	minus the one before it (> 0: sorted, unique)
//
// and then the server's bytes as they are.
//
// The decoder rejects anything else with a *CorruptError (the offset of
// the operation and why): an unknown opcode or record, a length past its
// bound, a write header that is not a write, records that do not add up
// to the payload, a compressed group that does not give exactly its
// length, a reference before the unit operation, or one the index cannot
// resolve or gives with another digest (the decoder checks it again). It
// never allocates more than a unit and two groups past its buffers.
//
// # Versions
//
// The version bytes of "VMBC" and "VMBA" change with any change of the
// format; an end refuses another version. The channel is named after the
// codec (Name, "nbd1"), so a dest end without it refuses the channel
// before any byte flows.
//
// # Limits
//
// A key matches a block the destination does not hold with a chance of
// count/2^64 per unit looked up; the decoder then fails the channel with
// a CorruptError naming the digest (the migration fails, no disk is
// written wrong). At 2^21 keys and 2^21 units that is one migration in
// four million.
package blockcodec
