package blockcodec

import (
	"bufio"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/pierrec/lz4/v4"
	"github.com/zeebo/blake3"

	"github.com/vmigrate/vmigrate/internal/iocount"
)

// CorruptError is an encoded stream the decoder refuses.
type CorruptError struct {
	Offset int64 // of the operation, in the encoded stream
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("blockcodec: corrupt stream at byte %d: %s", e.Offset, e.Reason)
}

// decoder rebuilds one stream. Its memory is bounded whatever it reads:
// the input and output buffers, one unit for a reference and two groups
// for a compressed one.
type decoder struct {
	cr    *iocount.Reader
	in    *bufio.Reader
	cw    *iocount.Writer
	out   *bufio.Writer
	index Neighbours // nil: references are corrupt
	unit  int        // from the unit operation; 0 before it
	opOff int64      // where the operation being decoded started
	comp  []byte     // a compressed group
	plain []byte     // a group or a unit
	fz    io.ReadCloser
	fzSrc bytes.Reader

	stats   Stats
	cpu     func() time.Duration
	onFlush func(Stats)
}

func newDecoder(w io.Writer, r io.Reader, index Neighbours) *decoder {
	cr := &iocount.Reader{R: r}
	cw := &iocount.Writer{W: w}
	return &decoder{
		cr:    cr,
		in:    bufio.NewReaderSize(cr, outBuffer),
		cw:    cw,
		out:   bufio.NewWriterSize(cw, outBuffer),
		index: index,
	}
}

// offset is how far into the encoded stream the decoder has read.
func (d *decoder) offset() int64 { return d.cr.N - int64(d.in.Buffered()) }

func (d *decoder) corrupt(format string, args ...any) error {
	return &CorruptError{Offset: d.opOff, Reason: fmt.Sprintf(format, args...)}
}

// readErr turns the end of the input inside an operation into a
// truncation.
func (d *decoder) readErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return d.corrupt("truncated")
	}
	return err
}

func (d *decoder) decode() error {
	var head [len(magic) + 1]byte
	if _, err := io.ReadFull(d.in, head[:]); err != nil {
		return d.readErr(err)
	}
	if string(head[:len(magic)]) != magic {
		return d.corrupt("not a block codec stream (header %q)", head[:])
	}
	if head[len(magic)] != version {
		return d.corrupt("codec version %d, this end speaks %d", head[len(magic)], version)
	}
	for {
		if d.in.Buffered() == 0 {
			if err := d.flush(); err != nil {
				return err
			}
		}
		d.opOff = d.offset()
		op, err := d.in.ReadByte()
		if errors.Is(err, io.EOF) {
			return d.flush()
		}
		if err != nil {
			return err
		}
		switch op {
		case opLiteral:
			n, err := d.uvarint(MaxLiteral, "literal length")
			if err != nil {
				return err
			}
			if n == 0 {
				return d.corrupt("empty literal")
			}
			err = d.copyN(int64(n))
		case opUnit:
			err = d.unitOp()
		case opWrite:
			err = d.write()
		default:
			return d.corrupt("unknown operation %#x", op)
		}
		if err != nil {
			return err
		}
	}
}

func (d *decoder) uvarint(max uint64, what string) (uint64, error) {
	v, err := binary.ReadUvarint(d.in)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, d.corrupt("truncated %s", what)
		}
		return 0, d.corrupt("%s: %v", what, err)
	}
	if v > max {
		return 0, d.corrupt("%s %d, more than %d", what, v, max)
	}
	return v, nil
}

// copyN copies n bytes of input to the output.
func (d *decoder) copyN(n int64) error {
	for n > 0 {
		if d.in.Buffered() == 0 {
			if _, err := d.in.Peek(1); err != nil {
				return d.readErr(err)
			}
		}
		b, _ := d.in.Peek(int(min(n, int64(d.in.Buffered()))))
		if _, err := d.out.Write(b); err != nil {
			return err
		}
		d.in.Discard(len(b))
		n -= int64(len(b))
	}
	return nil
}

func (d *decoder) unitOp() error {
	u, err := d.uvarint(MaxUnit, "unit")
	if err != nil {
		return err
	}
	switch {
	case d.unit != 0:
		return d.corrupt("a second unit operation")
	case d.index == nil:
		return d.corrupt("a unit of %d bytes, but this end has no index", u)
	case int(u) != d.index.BlockSize():
		return d.corrupt("a unit of %d bytes, but the index's is %d", u, d.index.BlockSize())
	}
	d.unit = int(u)
	return nil
}

// write decodes a write: its header, then records that add up to its
// payload exactly.
func (d *decoder) write() error {
	m, err := d.in.Peek(4)
	if err != nil {
		return d.readErr(err)
	}
	n := simpleHeaderLen
	switch binary.BigEndian.Uint32(m) {
	case nbdRequestMagic:
	case nbdExtendedMagic:
		n = extendedHeaderLen
	default:
		return d.corrupt("write with request magic %#x", m)
	}
	h, err := d.in.Peek(n)
	if err != nil {
		return d.readErr(err)
	}
	var length uint64
	if n == simpleHeaderLen {
		length = uint64(binary.BigEndian.Uint32(h[24:]))
	} else {
		length = binary.BigEndian.Uint64(h[24:])
	}
	if t := binary.BigEndian.Uint16(h[6:]); t != NBDCmdWrite {
		return d.corrupt("write operation for request type %d", t)
	}
	if length == 0 || length > MaxPayload {
		return d.corrupt("write of %d bytes (want 1 to %d)", length, MaxPayload)
	}
	if _, err := d.out.Write(h); err != nil {
		return err
	}
	d.in.Discard(n) // buffered: cannot fail
	for left := int64(length); left > 0; {
		d.opOff = d.offset()
		n, err := d.record(left)
		if err != nil {
			return err
		}
		left -= n
	}
	return nil
}

// record decodes one record of a write with left bytes to go, and returns
// how many it wrote.
func (d *decoder) record(left int64) (int64, error) {
	rec, err := d.in.ReadByte()
	if err != nil {
		return 0, d.readErr(err)
	}
	switch rec {
	case recZero:
		n, err := d.uvarint(uint64(left), "zero record length")
		if err != nil {
			return 0, err
		}
		if n == 0 {
			return 0, d.corrupt("empty zero record")
		}
		for r := n; r > 0; {
			k := min(r, uint64(len(zeros)))
			if _, err := d.out.Write(zeros[:k]); err != nil {
				return 0, err
			}
			r -= k
		}
		return int64(n), nil
	case recRef:
		return d.ref(left)
	case recLZ4, recDeflate:
		return d.compressed(rec, left)
	case recRaw:
		n, err := d.uvarint(uint64(min(left, MaxBlockSize)), "raw record length")
		if err != nil {
			return 0, err
		}
		if n == 0 {
			return 0, d.corrupt("empty raw record")
		}
		return int64(n), d.copyN(int64(n))
	}
	return 0, d.corrupt("unknown record %#x in a write", rec)
}

func (d *decoder) ref(left int64) (int64, error) {
	var fp [32]byte
	if _, err := io.ReadFull(d.in, fp[:]); err != nil {
		return 0, d.readErr(err)
	}
	if d.unit == 0 {
		return 0, d.corrupt("reference %x before the unit operation", fp)
	}
	if int64(d.unit) > left {
		return 0, d.corrupt("reference %x of %d bytes with %d left in the write", fp, d.unit, left)
	}
	buf := d.grow(&d.plain, d.unit)
	if err := d.index.Read(fp, buf); err != nil {
		return 0, d.corrupt("reference %x: %v", fp, err)
	}
	// The index must verify what it reads; a disk is too dear to trust it.
	if blake3.Sum256(buf) != fp {
		return 0, d.corrupt("reference %x: the index gave a block with another digest", fp)
	}
	d.stats.RefsResolved++
	if _, err := d.out.Write(buf); err != nil {
		return 0, err
	}
	return int64(d.unit), nil
}

func (d *decoder) compressed(rec byte, left int64) (int64, error) {
	raw, err := d.uvarint(uint64(min(left, MaxBlockSize)), "compressed record length")
	if err != nil {
		return 0, err
	}
	if raw == 0 {
		return 0, d.corrupt("empty compressed record")
	}
	bound := raw
	if rec == recLZ4 {
		bound = uint64(lz4.CompressBlockBound(int(raw)))
	}
	n, err := d.uvarint(bound, "compressed length")
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, d.corrupt("empty compressed group")
	}
	src := d.grow(&d.comp, int(n))
	if _, err := io.ReadFull(d.in, src); err != nil {
		return 0, d.readErr(err)
	}
	dst := d.grow(&d.plain, int(raw))
	if rec == recLZ4 {
		got, err := lz4.UncompressBlock(src, dst)
		if err != nil || got != int(raw) {
			return 0, d.corrupt("lz4 group of %d bytes gave %d (%v), want %d", n, got, err, raw)
		}
	} else if err := d.inflate(src, dst); err != nil {
		return 0, err
	}
	if _, err := d.out.Write(dst); err != nil {
		return 0, err
	}
	return int64(raw), nil
}

// inflate decompresses src, raw DEFLATE that must end exactly where dst
// does, into dst.
func (d *decoder) inflate(src, dst []byte) error {
	d.fzSrc.Reset(src)
	if d.fz == nil {
		d.fz = flate.NewReader(&d.fzSrc)
	} else if err := d.fz.(flate.Resetter).Reset(&d.fzSrc, nil); err != nil {
		return d.corrupt("deflate: %v", err)
	}
	if _, err := io.ReadFull(d.fz, dst); err != nil {
		return d.corrupt("deflate group of %d bytes: %v", len(src), err)
	}
	var one [1]byte
	if n, err := d.fz.Read(one[:]); n != 0 || !errors.Is(err, io.EOF) {
		return d.corrupt("deflate group of %d bytes gives more than %d", len(src), len(dst))
	}
	if d.fzSrc.Len() != 0 {
		return d.corrupt("deflate group of %d bytes ends %d bytes early", len(src), d.fzSrc.Len())
	}
	return nil
}

// grow returns (*b)[:n], reallocating if it is too small; n is bounded by
// the caller.
func (d *decoder) grow(b *[]byte, n int) []byte {
	if cap(*b) < n {
		*b = make([]byte, n)
	}
	return (*b)[:n]
}

func (d *decoder) flush() error {
	if err := d.out.Flush(); err != nil {
		return err
	}
	d.stats.DecodedBytes = d.cw.N
	if d.cpu != nil {
		d.stats.DecodeCPU = d.cpu()
	}
	if d.onFlush != nil {
		d.onFlush(d.stats)
	}
	return nil
}
