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
	"go.uber.org/zap"
)

// Wire constants; doc.go describes them.
const (
	magic   = "VMBC"
	version = 1

	opLiteral = 0x01
	opUnit    = 0x02
	opWrite   = 0x03

	recZero    = 0x10
	recRef     = 0x11
	recLZ4     = 0x12
	recDeflate = 0x13
	recRaw     = 0x14

	// MaxLiteral bounds a literal operation.
	MaxLiteral = 1 << 20
	// litFlush sends pending literal bytes once they reach this size.
	litFlush  = 64 << 10
	outBuffer = 256 << 10
	// announceWait is how long the first write waits for the dest end's
	// announcement before it goes on without references. The server's
	// replies come after the announcement on the same stream, so a
	// client that waited for them to write has it already.
	announceWait = 30 * time.Second
)

// zeros is compared with and written for zero blocks.
var zeros [MaxUnit]byte

func isZero(p []byte) bool { return bytes.Equal(p, zeros[:len(p)]) }

// encoder encodes one stream. It is not safe for concurrent use.
type encoder struct {
	cfg   Config
	log   *zap.Logger
	out   *bufio.Writer
	nr    *Reader
	lit   []byte // literal bytes not yet sent
	op    []byte // scratch for one operation
	hdr   []byte // the current write's header
	buf   []byte // the current write's payload
	lz    []byte
	lzc   lz4.Compressor
	fz    *flate.Writer
	fzBuf bytes.Buffer

	// annWait delivers the dest end's announcement (nil: none comes);
	// the first write waits for it. unit is the reference unit and keys
	// the dest end's blocks, once known.
	annWait  <-chan annResult
	annDone  bool
	keys     keySet
	unit     int
	unitSent bool

	stats   Stats
	cpu     func() time.Duration // the encoder thread's CPU time, or nil
	onFlush func(Stats)
}

func newEncoder(w io.Writer, cfg Config) *encoder {
	return &encoder{
		cfg:  cfg,
		log:  cfg.Log,
		out:  bufio.NewWriterSize(w, outBuffer),
		unit: cfg.BlockSize,
		lz:   make([]byte, lz4.CompressBlockBound(cfg.BlockSize)),
	}
}

// encode encodes src until it ends, and flushes.
func (e *encoder) encode(src io.Reader) error {
	if err := e.emit([]byte{magic[0], magic[1], magic[2], magic[3], version}); err != nil {
		return err
	}
	e.nr = NewReader(src)
	for {
		if e.nr.Buffered() == 0 {
			if err := e.flush(); err != nil {
				return err
			}
		}
		it, err := e.nr.Next()
		e.stats.StreamBytes = e.nr.Offset()
		var fe *FormatError
		switch {
		case errors.Is(err, io.EOF):
			return e.flush()
		case errors.As(err, &fe):
			return e.fallback(fe.Error())
		case errors.Is(err, io.ErrUnexpectedEOF):
			return e.fallback(fmt.Sprintf("nbd: client stream cut at byte %d", e.nr.Offset()))
		case err != nil:
			return err
		}
		if it.IsWrite() {
			err = e.write(it)
		} else {
			err = e.passthrough(it)
		}
		if err != nil {
			return err
		}
		e.stats.StreamBytes = e.nr.Offset()
	}
}

// passthrough sends an item and its payload, if any, as literal bytes.
func (e *encoder) passthrough(it *Item) error {
	e.stats.PassthroughBytes += int64(len(it.Raw))
	e.lit = append(e.lit, it.Raw...)
	for it.Payload > 0 {
		if len(e.lit) >= litFlush {
			if err := e.flushLiteral(); err != nil {
				return err
			}
		}
		n := len(e.lit)
		e.lit = append(e.lit, make([]byte, litFlush)...)
		m, err := e.nr.Read(e.lit[n:])
		e.lit = e.lit[:n+m]
		e.stats.PassthroughBytes += int64(m)
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			e.stats.Fallback = fmt.Sprintf("nbd: client stream cut in a payload at byte %d", e.nr.Offset())
			return e.flush()
		}
		if err != nil {
			return err
		}
	}
	if len(e.lit) >= litFlush {
		return e.flushLiteral()
	}
	return nil
}

// fallback passes the rest of the stream through as literals, flushing
// after every read: the codec no longer knows where requests end.
func (e *encoder) fallback(reason string) error {
	e.stats.Fallback = reason
	e.log.Warn("blockcodec: passing the rest of the NBD stream through", zap.String("reason", reason))
	rest := e.nr.Rest()
	buf := make([]byte, litFlush)
	for {
		n, err := rest.Read(buf)
		if n > 0 {
			e.stats.PassthroughBytes += int64(n)
			e.stats.StreamBytes += int64(n)
			e.lit = append(e.lit, buf[:n]...)
			if err := e.flush(); err != nil {
				return err
			}
		}
		if errors.Is(err, io.EOF) {
			return e.flush()
		}
		if err != nil {
			return err
		}
	}
}

// awaitAnnouncement waits, once, for what the dest end announced.
func (e *encoder) awaitAnnouncement() error {
	if e.annDone {
		return nil
	}
	e.annDone = true
	if e.annWait == nil {
		return nil
	}
	if err := e.flush(); err != nil { // nothing waits in the encoder meanwhile
		return err
	}
	t := time.NewTimer(announceWait)
	defer t.Stop()
	select {
	case r := <-e.annWait:
		if r.err != nil {
			return r.err
		}
		if r.a.unit != 0 {
			e.unit, e.keys = r.a.unit, r.a.keys
			e.stats.AnnouncedKeys = int64(r.a.keys.len())
			e.stats.Unit = r.a.unit
		}
	case <-t.C:
		e.log.Warn("blockcodec: no announcement from the dest end, going on without its index", zap.Duration("waited", announceWait))
	}
	return nil
}

// write encodes a write request and its payload.
func (e *encoder) write(it *Item) error {
	e.hdr = append(e.hdr[:0], it.Raw...) // Raw does not outlive the reads below
	n := int(it.Payload)
	from := it.From
	if cap(e.buf) < n {
		e.buf = make([]byte, n, max(n, min(2*cap(e.buf), MaxPayload)))
	}
	p := e.buf[:n]
	if m, err := io.ReadFull(e.nr, p); err != nil {
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			return err
		}
		// The client went away mid-write: the server gets what it sent.
		e.stats.Fallback = fmt.Sprintf("nbd: client stream cut in a write at byte %d", e.nr.Offset())
		e.stats.PassthroughBytes += int64(len(e.hdr) + m)
		e.lit = append(append(e.lit, e.hdr...), p[:m]...)
		e.stats.StreamBytes = e.nr.Offset()
		return e.flush()
	}
	if err := e.awaitAnnouncement(); err != nil {
		return err
	}
	if err := e.flushLiteral(); err != nil {
		return err
	}
	if e.keys.len() > 0 && !e.unitSent {
		e.unitSent = true
		e.op = binary.AppendUvarint(append(e.op[:0], opUnit), uint64(e.unit))
		if err := e.emit(e.op); err != nil {
			return err
		}
	}
	e.stats.Writes++
	e.stats.PayloadBytes += int64(n)
	e.op = append(append(e.op[:0], opWrite), e.hdr...)
	if err := e.emit(e.op); err != nil {
		return err
	}
	return e.payload(p, from)
}

// payload cuts p, which goes to offset from on the disk, at offsets
// aligned to the unit and sends each piece as zero, ref or data; runs of
// zero pieces merge, runs of data go in groups of up to BlockSize.
func (e *encoder) payload(p []byte, from uint64) error {
	u := uint64(e.unit)
	const (
		none = iota
		zero
		data
	)
	run, start, pieces := none, 0, int64(0)
	flushRun := func(end int) error {
		var err error
		switch run {
		case zero:
			e.op = binary.AppendUvarint(append(e.op[:0], recZero), uint64(end-start))
			e.count(&e.stats.Zero, pieces, end-start, len(e.op))
			err = e.emit(e.op)
		case data:
			for g := start; g < end && err == nil; g += e.cfg.BlockSize {
				err = e.group(p[g:min(g+e.cfg.BlockSize, end)])
			}
		}
		run, pieces = none, 0
		return err
	}
	for pos := 0; pos < len(p); {
		end := min(pos+int(u-(from+uint64(pos))&(u-1)), len(p))
		piece := p[pos:end]
		kind := data
		if isZero(piece) {
			kind = zero
		} else if len(piece) == e.unit && e.keys.len() > 0 {
			fp := blake3.Sum256(piece)
			if e.keys.has(binary.LittleEndian.Uint64(fp[:])) {
				if err := flushRun(pos); err != nil {
					return err
				}
				e.op = append(append(e.op[:0], recRef), fp[:]...)
				e.count(&e.stats.Ref, 1, len(piece), len(e.op))
				if err := e.emit(e.op); err != nil {
					return err
				}
				pos = end
				continue
			}
		}
		if kind != run {
			if err := flushRun(pos); err != nil {
				return err
			}
			run, start = kind, pos
		}
		pieces++
		pos = end
	}
	return flushRun(len(p))
}

func (e *encoder) count(c *Count, blocks int64, bytes, wire int) {
	c.Blocks += blocks
	c.Bytes += int64(bytes)
	c.Wire += int64(wire)
}

// group sends up to BlockSize bytes of data as the smallest of LZ4,
// DEFLATE (if asked for) and raw.
func (e *encoder) group(p []byte) error {
	n, err := e.lzc.CompressBlock(p, e.lz)
	if err != nil || n >= len(p) {
		n = 0
	}
	best := len(p)
	if n > 0 {
		best = n
	}
	if e.cfg.Deflate && e.deflate(p, best) {
		e.op = binary.AppendUvarint(append(e.op[:0], recDeflate), uint64(len(p)))
		e.op = binary.AppendUvarint(e.op, uint64(e.fzBuf.Len()))
		return e.record(&e.stats.Deflate, len(p), e.op, e.fzBuf.Bytes())
	}
	if n > 0 {
		e.op = binary.AppendUvarint(append(e.op[:0], recLZ4), uint64(len(p)))
		e.op = binary.AppendUvarint(e.op, uint64(n))
		return e.record(&e.stats.LZ4, len(p), e.op, e.lz[:n])
	}
	e.op = binary.AppendUvarint(append(e.op[:0], recRaw), uint64(len(p)))
	return e.record(&e.stats.Raw, len(p), e.op, p)
}

func (e *encoder) record(c *Count, n int, head, body []byte) error {
	e.count(c, 1, n, len(head)+len(body))
	if err := e.emit(head); err != nil {
		return err
	}
	return e.emit(body)
}

// deflate compresses p into e.fzBuf and reports whether it came out
// smaller than limit bytes.
func (e *encoder) deflate(p []byte, limit int) bool {
	e.fzBuf.Reset()
	if e.fz == nil {
		e.fz, _ = flate.NewWriter(&e.fzBuf, flate.BestSpeed) // the level is valid
	} else {
		e.fz.Reset(&e.fzBuf)
	}
	if _, err := e.fz.Write(p); err != nil {
		return false
	}
	if err := e.fz.Close(); err != nil {
		return false
	}
	return e.fzBuf.Len() < limit
}

func (e *encoder) literal(p []byte) error {
	e.op = binary.AppendUvarint(append(e.op[:0], opLiteral), uint64(len(p)))
	if err := e.emit(e.op); err != nil {
		return err
	}
	return e.emit(p)
}

func (e *encoder) flushLiteral() error {
	for p := e.lit; len(p) > 0; {
		n := min(len(p), MaxLiteral)
		if err := e.literal(p[:n]); err != nil {
			return err
		}
		p = p[n:]
	}
	e.lit = e.lit[:0]
	return nil
}

func (e *encoder) emit(p []byte) error {
	e.stats.EncodedBytes += int64(len(p))
	_, err := e.out.Write(p)
	return err
}

// flush sends everything pending: nothing waits in the encoder while it
// waits for the client.
func (e *encoder) flush() error {
	if err := e.flushLiteral(); err != nil {
		return err
	}
	if err := e.out.Flush(); err != nil {
		return err
	}
	if e.cpu != nil {
		e.stats.EncodeCPU = e.cpu()
	}
	if e.onFlush != nil {
		s := e.stats
		s.Channels = 1
		e.onFlush(s)
	}
	return nil
}
