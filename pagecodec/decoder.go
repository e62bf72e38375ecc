package pagecodec

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/zeebo/blake3"

	"github.com/vmigrate/vmigrate/internal/iocount"
	"github.com/vmigrate/vmigrate/migstream"
)

// CorruptError is an encoded stream the decoder refuses.
type CorruptError struct {
	Offset int64 // in the encoded stream
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("pagecodec: corrupt stream at byte %d: %s", e.Offset, e.Reason)
}

// decoder rebuilds one stream.
type decoder struct {
	maxSlots int64
	cr       *iocount.Reader
	in       *bufio.Reader
	out      *bufio.Writer
	st       *store
	names    []string
	blocks   map[string]uint16
	cur      uint16
	prev     uint64
	scratch  []byte
	hdr      []byte
	hasher   *blake3.Hasher
	zr       *zstd.Decoder // the stream's zstd frame, at the first page-zstd
	zfeed    *zstdFeed
	pages    int64
	seeds    *seedPages // the dest end's seeds, nil for none
}

func newDecoder(w io.Writer, r io.Reader, maxSlots int64) *decoder {
	cr := &iocount.Reader{R: r}
	return &decoder{
		maxSlots: maxSlots,
		cr:       cr,
		in:       bufio.NewReaderSize(cr, outBuffer),
		out:      bufio.NewWriterSize(w, outBuffer),
		blocks:   make(map[string]uint16),
		scratch:  make([]byte, max(lz4Bound, 2*pageSize)),
		hasher:   blake3.New(),
	}
}

// offset is how far into the encoded stream the decoder has read.
func (d *decoder) offset() int64 { return d.cr.N - int64(d.in.Buffered()) }

func (d *decoder) corrupt(format string, args ...any) error {
	return &CorruptError{Offset: d.offset(), Reason: fmt.Sprintf(format, args...)}
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
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return d.corrupt("no codec header")
		}
		return err
	}
	if string(head[:len(magic)]) != magic {
		return d.corrupt("not a page codec stream (header %q)", head[:])
	}
	if head[len(magic)] != version {
		return d.corrupt("codec version %d, this end speaks %d", head[len(magic)], version)
	}
	for {
		if d.in.Buffered() == 0 {
			if err := d.out.Flush(); err != nil {
				return writeErr(err)
			}
		}
		op, err := d.in.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) {
				if err := d.out.Flush(); err != nil {
					return writeErr(err)
				}
				return nil
			}
			return err
		}
		if err := d.op(op); err != nil {
			return err
		}
	}
}

func (d *decoder) uvarint(max uint64, what string) (uint64, error) {
	var v uint64
	for i := 0; ; i++ {
		b, err := d.in.ReadByte()
		if err != nil {
			return 0, d.readErr(err)
		}
		if i == 9 && b > 1 {
			return 0, d.corrupt("%s: varint overflows", what)
		}
		v |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			break
		}
	}
	if v > max {
		return 0, d.corrupt("%s %d, more than %d", what, v, max)
	}
	return v, nil
}

func (d *decoder) op(op byte) error {
	switch op {
	case opLiteral:
		n, err := d.uvarint(maxLiteral, "literal length")
		if err != nil {
			return err
		}
		if m, err := io.CopyN(d.out, d.in, int64(n)); err != nil {
			if m < int64(n) && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
				return d.corrupt("truncated literal")
			}
			return err
		}
		return nil
	case opCache:
		if d.st != nil {
			return d.corrupt("cache size given twice")
		}
		n, err := d.uvarint(uint64(d.maxSlots), "cache slots")
		if err != nil {
			return err
		}
		if n == 0 {
			return d.corrupt("a cache of 0 slots")
		}
		d.st = newStore(int32(n))
		return nil
	}
	cont := op&opContinue != 0
	kind := op &^ opContinue
	switch kind {
	case opZeroRun, opForget, opPageZero, opPageRef, opPageDelta, opPageLZ4, opPageZstd, opPageRaw, opPageSeed:
	default:
		return d.corrupt("unknown operation 0x%02x", op)
	}
	if d.st == nil {
		return d.corrupt("a page before the cache size")
	}
	name, page, k, err := d.addr(cont)
	if err != nil {
		return err
	}
	switch kind {
	case opZeroRun:
		n, err := d.uvarint(maxZeroRun-1, "zero run")
		if err != nil {
			return err
		}
		if n >= maxPage-page {
			return d.corrupt("zero run past the largest page")
		}
		d.prev = page + n
		for i := range n + 1 {
			d.hdr = binary.BigEndian.AppendUint64(d.hdr[:0], (page+i)*pageSize|migstream.FlagZero)
			if i > 0 || cont {
				d.hdr[7] |= migstream.FlagContinue
			} else {
				d.hdr = append(d.hdr, byte(len(name)))
				d.hdr = append(d.hdr, name...)
			}
			d.hdr = append(d.hdr, 0)
			if _, err := d.out.Write(d.hdr); err != nil {
				return writeErr(err)
			}
			d.st.drop(key(d.cur, page+i))
		}
		return nil
	case opForget:
		d.st.drop(k)
		return nil
	case opPageZero:
		d.st.drop(k)
		clear(d.scratch[:pageSize])
		return d.writePage(page, cont, name, d.scratch[:pageSize])
	case opPageRef:
		s, err := d.uvarint(uint64(d.st.capacity), "reference slot")
		if err != nil {
			return err
		}
		var sum [refSumLen]byte
		if _, err := io.ReadFull(d.in, sum[:]); err != nil {
			return d.readErr(err)
		}
		t := int32(s)
		if !d.st.valid(t) {
			return d.corrupt("reference to empty cache slot %d", t)
		}
		src := d.st.page(t)
		if got := sum16(d.hasher, src); !bytes.Equal(got[:refSumLen], sum[:]) {
			return d.corrupt("reference to slot %d: digest differs (caches out of step)", t)
		}
		d.st.touch(t)
		dst := d.st.page(d.st.slotFor(k))
		copy(dst, src)
		return d.writePage(page, cont, name, dst)
	case opPageSeed:
		var n uint64
		if d.seeds != nil {
			n = uint64(len(d.seeds.pages))
		}
		s, err := d.uvarint(^uint64(0), "seed slot")
		if err != nil {
			return err
		}
		if s >= n {
			return d.corrupt("seed %d of %d announced", s, n)
		}
		dst := d.st.page(d.st.slotFor(k))
		copy(dst, d.seeds.pages[s])
		return d.writePage(page, cont, name, dst)
	case opPageDelta:
		n, err := d.uvarint(pageSize*2, "delta length")
		if err != nil {
			return err
		}
		delta := d.scratch[:n]
		if _, err := io.ReadFull(d.in, delta); err != nil {
			return d.readErr(err)
		}
		if _, ok := d.st.lookup(k); !ok {
			return d.corrupt("delta for page %d with no earlier version", page)
		}
		dst := d.st.page(d.st.slotFor(k))
		if err := applyDelta(dst, delta); err != nil {
			return d.corrupt("page %d: %v", page, err)
		}
		return d.writePage(page, cont, name, dst)
	case opPageLZ4, opPageZstd:
		limit, what := uint64(lz4Bound), "lz4"
		if kind == opPageZstd {
			limit, what = zstdPageMax, "zstd"
		}
		n, err := d.uvarint(limit, what+" length")
		if err != nil {
			return err
		}
		if n == 0 {
			return d.corrupt("page %d: empty %s data", page, what)
		}
		src := d.scratch[:n]
		if _, err := io.ReadFull(d.in, src); err != nil {
			return d.readErr(err)
		}
		// Straight into the page's slot: if the data is bad the stream
		// ends here, and the caches with it.
		dst := d.st.page(d.st.slotFor(k))
		if kind == opPageZstd {
			if err := d.unzstd(dst, src); err != nil {
				return d.corrupt("page %d: zstd data does not give one page: %v", page, err)
			}
		} else if m, err := lz4.UncompressBlock(src, dst); err != nil || m != len(dst) {
			return d.corrupt("page %d: lz4 data does not give one page", page)
		}
		return d.writePage(page, cont, name, dst)
	default: // opPageRaw
		dst := d.st.page(d.st.slotFor(k))
		if _, err := io.ReadFull(d.in, dst); err != nil {
			return d.readErr(err)
		}
		return d.writePage(page, cont, name, dst)
	}
}

// errZstdShort is the zstd decoder asking for bytes past an operation's
// data: its blocks do not give a whole page.
var errZstdShort = errors.New("the data ends inside a block")

// zstdFeed gives the stream's zstd decoder one operation's data at a time.
type zstdFeed struct{ b []byte }

func (f *zstdFeed) Read(p []byte) (int, error) {
	if len(f.b) == 0 {
		return 0, errZstdShort
	}
	n := copy(p, f.b)
	f.b = f.b[n:]
	return n, nil
}

// unzstd decodes the next page of the stream's zstd frame from src, the
// blocks a page-zstd operation carried. The frame's window is bounded
// (zstdWindow); a frame that asks for more is refused.
func (d *decoder) unzstd(dst, src []byte) error {
	if d.zr == nil {
		d.zfeed = &zstdFeed{}
		// Not low-memory: a history of twice the window, moved down every
		// 8 MiB rather than every 1 MiB.
		zr, err := zstd.NewReader(d.zfeed, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(zstdWindow),
			zstd.WithDecoderLowmem(false))
		if err != nil {
			return err
		}
		d.zr = zr
	}
	d.zfeed.b = src
	if _, err := io.ReadFull(d.zr, dst); err != nil {
		return err
	}
	if len(d.zfeed.b) != 0 {
		return fmt.Errorf("%d bytes left over", len(d.zfeed.b))
	}
	return nil
}

// addr reads an operation's page address.
func (d *decoder) addr(cont bool) (name string, page, k uint64, err error) {
	if cont {
		if len(d.names) == 0 {
			return "", 0, 0, d.corrupt("CONTINUE before any block")
		}
		name = d.names[d.cur]
	} else {
		l, err := d.in.ReadByte()
		if err != nil {
			return "", 0, 0, d.readErr(err)
		}
		if l == 0 {
			return "", 0, 0, d.corrupt("empty block name")
		}
		b := make([]byte, l)
		if _, err := io.ReadFull(d.in, b); err != nil {
			return "", 0, 0, d.readErr(err)
		}
		idx, ok := d.blocks[string(b)]
		if !ok {
			if len(d.names) == maxBlocks {
				return "", 0, 0, d.corrupt("more than %d RAM blocks", maxBlocks)
			}
			idx = uint16(len(d.names))
			d.names = append(d.names, string(b))
			d.blocks[string(b)] = idx
		}
		d.cur = idx
		name = d.names[idx]
	}
	ux, err := d.uvarint(^uint64(0), "page number")
	if err != nil {
		return "", 0, 0, err
	}
	page = d.prev + uint64(int64(ux>>1)^-int64(ux&1)) // zigzag
	if page >= maxPage {
		return "", 0, 0, d.corrupt("page number %d out of range", page)
	}
	d.prev = page
	return name, page, key(d.cur, page), nil
}

func (d *decoder) writePage(page uint64, cont bool, name string, data []byte) error {
	d.hdr = migstream.AppendPageHeader(d.hdr[:0], page, cont, name)
	if _, err := d.out.Write(d.hdr); err != nil {
		return writeErr(err)
	}
	if _, err := d.out.Write(data); err != nil {
		return writeErr(err)
	}
	d.pages++
	return nil
}
