package blockindex

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"math"
	"math/bits"
	"strings"
)

const (
	fileMagic   = "VMBI"
	fileVersion = 1

	maxRoots   = 4096
	maxPathLen = 4096
	maxImages  = 1 << 24

	headerLen     = 8
	imageFixedLen = 2 + 8 + 8 + 4 + 4 + 4 + 1
	entryLen      = 16
	trailerLen    = 4

	flagAdded  = 1 // the image was named (Add or a root file), not found by walking a directory
	flagRehash = 2 // the image was excluded after it was hashed; hash it again
	knownFlags = flagAdded | flagRehash
)

// ErrCorrupt is wrapped by every error about a malformed index file.
var ErrCorrupt = errors.New("corrupt index file")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// fileData is what an index file holds.
type fileData struct {
	blockSize int
	roots     []string
	match     string
	hashNanos int64
	hashBytes int64
	images    []image
	entries   []entry
}

// encode writes d. Entries of images with flagRehash are left out (their
// count is written as 0).
func encode(w io.Writer, d *fileData) error {
	crc := crc32.New(castagnoli)
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 1<<20)
	var b []byte
	b = append(b, fileMagic...)
	b = append(b, fileVersion, byte(bits.TrailingZeros(uint(d.blockSize))), 0, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(d.roots)))
	for _, r := range d.roots {
		b = appendString(b, r)
	}
	b = appendString(b, d.match)
	b = binary.LittleEndian.AppendUint64(b, uint64(d.hashNanos))
	b = binary.LittleEndian.AppendUint64(b, uint64(d.hashBytes))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(d.images)))
	for _, im := range d.images {
		n := im.entries
		if im.flags&flagRehash != 0 {
			n = 0
		}
		b = appendString(b, im.path)
		b = binary.LittleEndian.AppendUint64(b, uint64(im.size))
		b = binary.LittleEndian.AppendUint64(b, uint64(im.mtime))
		b = binary.LittleEndian.AppendUint32(b, im.blocks)
		b = binary.LittleEndian.AppendUint32(b, im.zero)
		b = binary.LittleEndian.AppendUint32(b, n)
		b = append(b, im.flags)
		if len(b) > 1<<16 {
			bw.Write(b)
			b = b[:0]
		}
	}
	bw.Write(b)
	var e [entryLen]byte
	for _, en := range d.entries {
		if d.images[en.img].flags&flagRehash != 0 {
			continue
		}
		binary.LittleEndian.PutUint64(e[0:], en.key)
		binary.LittleEndian.PutUint32(e[8:], en.img)
		binary.LittleEndian.PutUint32(e[12:], en.blk)
		bw.Write(e[:])
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err := w.Write(binary.LittleEndian.AppendUint32(nil, crc.Sum32()))
	return err
}

func appendString(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// validPath reports whether p can be written as a path of the file.
func validPath(p string) bool {
	return p != "" && len(p) <= maxPathLen && !strings.ContainsRune(p, 0)
}

// decoder reads an index file of a known size, keeping a sticky error.
type decoder struct {
	r    *bufio.Reader
	crc  hash.Hash32
	left int64 // bytes of the file not read yet
	err  error
	buf  [8]byte
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
	}
}

// short records that a count needs more bytes than the file has left.
func (d *decoder) short(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s: %w", ErrCorrupt, fmt.Sprintf(format, args...), io.ErrUnexpectedEOF)
	}
}

func (d *decoder) read(p []byte) {
	if d.err != nil {
		return
	}
	if int64(len(p)) > d.left {
		d.err = fmt.Errorf("%w: %w", ErrCorrupt, io.ErrUnexpectedEOF)
		return
	}
	if _, err := io.ReadFull(d.r, p); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		d.err = fmt.Errorf("%w: %w", ErrCorrupt, err)
		return
	}
	d.crc.Write(p)
	d.left -= int64(len(p))
}

func (d *decoder) u8() uint8   { d.read(d.buf[:1]); return d.buf[0] }
func (d *decoder) u16() uint16 { d.read(d.buf[:2]); return binary.LittleEndian.Uint16(d.buf[:]) }
func (d *decoder) u32() uint32 { d.read(d.buf[:4]); return binary.LittleEndian.Uint32(d.buf[:]) }
func (d *decoder) u64() uint64 { d.read(d.buf[:8]); return binary.LittleEndian.Uint64(d.buf[:]) }

// str reads a length-prefixed string of at most maxPathLen bytes; empty
// is allowed only when emptyOK.
func (d *decoder) str(what string, emptyOK bool) string {
	n := int(d.u16())
	if d.err != nil {
		return ""
	}
	if n > maxPathLen || n == 0 && !emptyOK {
		d.fail("%s of %d bytes", what, n)
		return ""
	}
	if int64(n) > d.left {
		d.short("%s of %d bytes", what, n)
		return ""
	}
	b := make([]byte, n)
	d.read(b)
	if n > 0 && !validPath(string(b)) {
		d.fail("%s contains a NUL byte", what)
	}
	return string(b)
}

// decode reads an index file of size bytes from r.
func decode(r io.Reader, size int64) (*fileData, error) {
	d := &decoder{r: bufio.NewReaderSize(r, 1<<20), crc: crc32.New(castagnoli), left: size}
	var head [headerLen]byte
	d.read(head[:])
	if d.err != nil {
		return nil, fmt.Errorf("%w: %d bytes, not an index file", ErrCorrupt, size)
	}
	if string(head[:4]) != fileMagic {
		return nil, fmt.Errorf("%w: not an index file (magic %q)", ErrCorrupt, head[:4])
	}
	if head[4] != fileVersion {
		return nil, fmt.Errorf("%w: version %d, this vmigrate reads version %d", ErrCorrupt, head[4], fileVersion)
	}
	if head[5] < 9 || head[5] > 20 || head[6] != 0 || head[7] != 0 {
		return nil, fmt.Errorf("%w: block size 2^%d or flags %#x", ErrCorrupt, head[5], head[6:8])
	}
	fd := &fileData{blockSize: 1 << head[5]}
	nroots := d.u32()
	if d.err == nil && nroots > maxRoots {
		d.fail("%d roots", nroots)
	} else if int64(nroots)*3 > d.left {
		d.short("%d roots in %d bytes", nroots, d.left)
	}
	for i := uint32(0); i < nroots && d.err == nil; i++ {
		fd.roots = append(fd.roots, d.str(fmt.Sprintf("root %d", i), false))
	}
	fd.match = d.str("match", true)
	fd.hashNanos = int64(d.u64())
	fd.hashBytes = int64(d.u64())
	nimg := d.u32()
	if d.err == nil && nimg > maxImages {
		d.fail("%d images", nimg)
	} else if int64(nimg)*(imageFixedLen+1) > d.left {
		d.short("%d images in %d bytes", nimg, d.left)
	}
	if d.err != nil {
		return nil, d.err
	}
	fd.images = make([]image, nimg)
	var total uint64
	for i := range fd.images {
		im := &fd.images[i]
		im.path = d.str(fmt.Sprintf("image %d path", i), false)
		im.size = int64(d.u64())
		im.mtime = int64(d.u64())
		im.blocks = d.u32()
		im.zero = d.u32()
		im.entries = d.u32()
		im.flags = d.u8()
		if d.err != nil {
			return nil, d.err
		}
		if im.size < 0 || blockCount(im.size, fd.blockSize) != int64(im.blocks) {
			return nil, fmt.Errorf("%w: image %d: %d blocks for %d bytes", ErrCorrupt, i, im.blocks, im.size)
		}
		if uint64(im.zero)+uint64(im.entries) > uint64(im.blocks) || im.flags&^knownFlags != 0 {
			return nil, fmt.Errorf("%w: image %d: %d zero blocks and %d entries of %d blocks, flags %#x", ErrCorrupt, i, im.zero, im.entries, im.blocks, im.flags)
		}
		if im.flags&flagRehash != 0 && im.entries != 0 {
			return nil, fmt.Errorf("%w: image %d is to be re-hashed but has %d entries", ErrCorrupt, i, im.entries)
		}
		total += uint64(im.entries)
	}
	if total > uint64(d.left-trailerLen)/entryLen || d.left < trailerLen {
		return nil, fmt.Errorf("%w: %d entries in %d bytes: %w", ErrCorrupt, total, d.left, io.ErrUnexpectedEOF)
	}
	if total > math.MaxInt/entryLen {
		return nil, fmt.Errorf("%w: %d entries", ErrCorrupt, total)
	}
	fd.entries = make([]entry, total)
	counts := make([]uint32, nimg)
	var e [entryLen]byte
	for i := range fd.entries {
		d.read(e[:])
		if d.err != nil {
			return nil, d.err
		}
		en := entry{key: binary.LittleEndian.Uint64(e[0:]), img: binary.LittleEndian.Uint32(e[8:]), blk: binary.LittleEndian.Uint32(e[12:])}
		if en.img >= nimg || en.blk >= fd.images[en.img].blocks {
			return nil, fmt.Errorf("%w: entry %d: block %d of image %d", ErrCorrupt, i, en.blk, en.img)
		}
		if i > 0 && !fd.entries[i-1].less(en) {
			return nil, fmt.Errorf("%w: entry %d out of order", ErrCorrupt, i)
		}
		counts[en.img]++
		if counts[en.img] > fd.images[en.img].entries {
			return nil, fmt.Errorf("%w: entry %d: image %d has more than its %d entries", ErrCorrupt, i, en.img, fd.images[en.img].entries)
		}
		fd.entries[i] = en
	}
	want := d.crc.Sum32()
	got := d.u32()
	if d.err != nil {
		return nil, d.err
	}
	if got != want {
		return nil, fmt.Errorf("%w: checksum %08x, content sums to %08x", ErrCorrupt, got, want)
	}
	if d.left != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the checksum", ErrCorrupt, d.left)
	}
	return fd, nil
}

// blockCount is the number of blocks of size bs that cover size bytes.
func blockCount(size int64, bs int) int64 {
	return (size + int64(bs) - 1) / int64(bs)
}
