package pagecodec

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/zeebo/blake3"

	"github.com/vmigrate/vmigrate/migstream"
)

// Wire constants; doc.go describes them.
const (
	magic   = "VMPC"
	version = 3

	opLiteral   = 0x01
	opCache     = 0x02
	opZeroRun   = 0x03
	opForget    = 0x04
	opPageZero  = 0x10
	opPageRef   = 0x11
	opPageDelta = 0x12
	opPageLZ4   = 0x13
	opPageRaw   = 0x14
	opPageSeed  = 0x15
	opPageZstd  = 0x17
	opContinue  = 0x80

	maxLiteral = 1 << 20
	maxZeroRun = 1 << 24 // records in one zero-run
	refSumLen  = 8
	pageSize   = migstream.PageSize

	// deltaTake is a delta small enough to send without looking further:
	// nothing else but a reference can be smaller, and a reference costs
	// a hash.
	deltaTake = 64
	// deltaLimit stops a delta that has grown past half a page.
	deltaLimit = pageSize / 2
	// zstdWindow is the history of the stream's zstd frame: the first
	// copies of the last 8 MiB of pages sent with page-zstd. The decoder
	// refuses a frame that asks for more.
	zstdWindow = 8 << 20
	// zstdPageMax bounds one page-zstd operation's data: a page zstd
	// cannot shrink goes as a raw block (3 bytes of header), and the
	// first carries the frame header (at most 18 bytes).
	zstdPageMax = pageSize + 64
	// litFlush sends pending literal bytes once they reach this size.
	litFlush  = 64 << 10
	outBuffer = 256 << 10
)

var (
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
	lz4Bound   = lz4.CompressBlockBound(pageSize)
)

// encoder encodes one stream. It is not safe for concurrent use.
type encoder struct {
	cfg Config
	out *bufio.Writer
	st  *store

	// index finds a slot by a page's CRC-32C; a hit is then compared byte
	// for byte. sums[s] is slot s's checksum, hasSum[s] whether it is
	// indexed.
	index  map[uint32]int32
	sums   []uint32
	hasSum []bool

	blocks  map[string]uint16
	cur     uint16 // block of the last addr
	prev    uint64 // page of the last addr
	lit     []byte // literal bytes not yet sent
	op      []byte // scratch for one operation
	delta   []byte
	lz      []byte
	comp    pageCompressor
	zw      *zstd.Encoder // the stream's one zstd frame, begun at the first page-zstd
	zBuf    bytes.Buffer
	pace    *pacer
	hasher  *blake3.Hasher
	run     zeroRun
	stats   Stats
	onFlush func(Stats)

	// seedWait delivers the dest end's announcement (nil for none), which
	// the encoder waits for before its first page; seeds is what came.
	seedWait <-chan *seedIndex
	seeds    *seedIndex
}

// zeroRun is a run of ZERO records not yet sent.
type zeroRun struct {
	n    uint64 // records in the run; 0 for none
	cont bool   // the first record said CONTINUE
	name string // its block's name, if it did not
	page uint64 // the first record's page
}

func newEncoder(w io.Writer, cfg Config) *encoder {
	p := newPacer(time.Now())
	if cfg.Effort != EffortAuto {
		p.level = cfg.Effort
	}
	return &encoder{
		cfg:    cfg,
		pace:   p,
		out:    bufio.NewWriterSize(waitWriter{w, p}, outBuffer),
		blocks: make(map[string]uint16),
		index:  make(map[uint32]int32),
		lz:     make([]byte, lz4Bound),
		hasher: blake3.New(),
	}
}

// run encodes src until it ends, and flushes.
func (e *encoder) encode(src io.Reader) error {
	if _, err := e.out.WriteString(magic + string(rune(version))); err != nil {
		return writeErr(err)
	}
	e.stats.EncodedBytes += int64(len(magic) + 1)
	e.stats.Effort = e.cfg.Effort.String()
	defer func() { e.stats.Spent = e.pace.spentBy(time.Now()) }()
	r := migstream.NewReader(waitReader{src, e.pace})
	for {
		if r.Buffered() == 0 {
			if err := e.flush(); err != nil {
				return err
			}
		}
		rec, err := r.Next()
		if err != nil {
			e.stats.StreamBytes = r.Offset()
			if errors.Is(err, io.EOF) {
				return e.flush()
			}
			return err
		}
		if err := e.record(rec, r); err != nil {
			return err
		}
		e.stats.StreamBytes = r.Offset()
	}
}

// writeError marks an error of the writer (the tunnel), as opposed to the
// stream being read.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

func writeErr(err error) error { return &writeError{err} }

func (e *encoder) record(rec *migstream.Record, r *migstream.Reader) error {
	switch rec.Kind {
	case migstream.KindPage:
		return e.page(rec)
	case migstream.KindZero:
		if rec.Fill == 0 {
			return e.zero(rec)
		}
		return e.forget(rec)
	case migstream.KindXBZRLE, migstream.KindCompressed:
		return e.forget(rec)
	case migstream.KindRaw:
		if rec.Reason != "" {
			e.stats.Passthrough = rec.Reason
		}
		e.stats.LiteralBytes += int64(len(rec.Data))
		if err := e.flushRun(); err != nil {
			return err
		}
		if err := e.flushLiteral(); err != nil {
			return err
		}
		for p := rec.Data; len(p) > 0; {
			n := min(len(p), maxLiteral)
			if err := e.literal(p[:n]); err != nil {
				return err
			}
			p = p[n:]
		}
		return nil
	case migstream.KindMemSize:
		if err := e.appendLiteral(rec); err != nil {
			return err
		}
		return e.configure(rec.Addr)
	}
	if err := e.appendLiteral(rec); err != nil {
		return err
	}
	if len(e.lit) >= litFlush {
		return e.flushLiteral()
	}
	return nil
}

// appendLiteral queues rec's bytes as a literal. A pending run of ZERO
// records came before rec, so it goes out first: literals and runs must
// leave in stream order.
func (e *encoder) appendLiteral(rec *migstream.Record) error {
	if err := e.flushRun(); err != nil {
		return err
	}
	n := len(e.lit)
	e.lit = migstream.AppendRecord(e.lit, rec)
	e.stats.LiteralBytes += int64(len(e.lit) - n)
	return nil
}

// configure sizes the cache from the guest's RAM and tells the decoder.
func (e *encoder) configure(total uint64) error {
	if e.st != nil {
		return nil
	}
	if e.seedWait != nil {
		t := time.NewTimer(announceWait)
		select {
		case e.seeds = <-e.seedWait:
		case <-t.C: // go on without seeds; ToLocal still reads it
		}
		t.Stop()
		// Waiting for seeds is not the link's pace: the window starts anew.
		e.pace.start, e.pace.waited, e.pace.pages = time.Now(), 0, 0
		if e.seeds != nil {
			e.stats.SeedPages = int64(len(e.seeds.sums))
		}
	}
	slots := e.cfg.cacheSlots(total)
	e.st = newStore(slots)
	e.st.changed = e.unindex
	e.stats.CacheMaxBytes = int64(slots) * pageSize
	e.op = binary.AppendUvarint(append(e.op[:0], opCache), uint64(slots))
	return e.emit(e.op)
}

func (e *encoder) unindex(s int32) {
	if int(s) < len(e.hasSum) && e.hasSum[s] {
		if t, ok := e.index[e.sums[s]]; ok && t == s {
			delete(e.index, e.sums[s])
		}
		e.hasSum[s] = false
	}
}

// addr appends an operation's opcode and page address and returns the
// page's cache key.
func (e *encoder) addr(b []byte, op byte, rec *migstream.Record) ([]byte, uint64, error) {
	if rec.Continue() {
		b = append(b, op|opContinue)
	} else {
		idx, ok := e.blocks[rec.Block]
		if !ok {
			if len(e.blocks) == maxBlocks {
				return b, 0, fmt.Errorf("pagecodec: more than %d RAM blocks", maxBlocks)
			}
			idx = uint16(len(e.blocks))
			e.blocks[rec.Block] = idx
		}
		e.cur = idx
		b = append(b, op, byte(len(rec.Block)))
		b = append(b, rec.Block...)
	}
	page := rec.Page()
	b = binary.AppendVarint(b, int64(page-e.prev))
	e.prev = page
	return b, key(e.cur, page), nil
}

// page encodes one PAGE record.
func (e *encoder) page(rec *migstream.Record) error {
	if err := e.flushRun(); err != nil {
		return err
	}
	if err := e.flushLiteral(); err != nil {
		return err
	}
	if e.st == nil {
		return errors.New("pagecodec: a page before the RAM block list")
	}
	data := rec.Data
	var k uint64
	var err error
	if isZero(data) {
		if e.op, k, err = e.addr(e.op[:0], opPageZero, rec); err != nil {
			return err
		}
		e.st.drop(k)
		return e.sent(&e.stats.Pages.Zero, e.op)
	}
	// The address is the same for every encoding: write it once and set
	// the opcode (the first byte) when the choice is made.
	if e.op, k, err = e.addr(e.op[:0], opPageDelta, rec); err != nil {
		return err
	}
	base, haveBase := e.st.lookup(k)
	delta := e.delta[:0]
	deltaOK := false
	if haveBase {
		delta, deltaOK = appendDelta(delta, e.st.page(base), data, deltaLimit)
		e.delta = delta
		if deltaOK && len(delta) <= deltaTake {
			return e.sendDelta(k, data)
		}
	}
	sum := crc32.Checksum(data, castagnoli)
	if t, ok := e.index[sum]; ok && bytes.Equal(e.st.page(t), data) {
		e.st.touch(t)
		e.setOp(opPageRef)
		e.op = binary.AppendUvarint(e.op, uint64(t))
		d := sum16(e.hasher, data)
		e.op = append(e.op, d[:refSumLen]...)
		e.store(k, data, sum)
		return e.sent(&e.stats.Pages.Ref, e.op)
	}
	if e.seeds != nil {
		if t, ok := e.seeds.byCRC[sum]; ok && sum16(e.hasher, data) == e.seeds.sums[t] {
			e.setOp(opPageSeed)
			e.op = binary.AppendUvarint(e.op, uint64(t))
			e.store(k, data, sum)
			return e.sent(&e.stats.Pages.Seed, e.op)
		}
	}
	if e.cfg.Effort == EffortAuto {
		e.pace.page(time.Now)
	}
	level := e.pace.level
	if level >= EffortMax {
		// zstd is tried on every page: it must be sent once made, so a
		// delta (at most half a page here) goes first. No LZ4 try first:
		// it cost a quarter of the encoder's CPU on text, and zstd's
		// fastest level passes a random page as a raw block (9 bytes
		// more than the page) at about 300 MB/s, far above any WAN.
		if deltaOK {
			return e.sendDelta(k, data)
		}
		if err := e.zstd(data); err != nil {
			return err
		}
		e.setOp(opPageZstd)
		e.op = binary.AppendUvarint(e.op, uint64(e.zBuf.Len()))
		e.op = append(e.op, e.zBuf.Bytes()...)
		e.store(k, data, sum)
		return e.sent(&e.stats.Pages.Zstd, e.op)
	}
	n := 0
	if level >= EffortLZ4 {
		n = e.comp.compress(e.lz, data, pageSize-1)
	}
	switch {
	case deltaOK && (n == 0 || len(delta) <= n):
		return e.sendDelta(k, data)
	case n > 0:
		e.setOp(opPageLZ4)
		e.op = binary.AppendUvarint(e.op, uint64(n))
		e.op = append(e.op, e.lz[:n]...)
		e.store(k, data, sum)
		return e.sent(&e.stats.Pages.LZ4, e.op)
	}
	e.setOp(opPageRaw)
	e.store(k, data, sum)
	if err := e.emit(e.op); err != nil {
		return err
	}
	if err := e.emit(data); err != nil {
		return err
	}
	e.stats.Pages.Raw.Pages++
	e.stats.Pages.Raw.Bytes += int64(len(e.op) + len(data))
	return nil
}

// zstd compresses data into e.zBuf as the next block of the stream's zstd
// frame, whose window holds the pages compressed before it: what the
// pages share (the same libraries, files, text) is sent once. Whatever it
// gives must be sent, since the decoder's frame must see the same blocks.
func (e *encoder) zstd(data []byte) error {
	e.zBuf.Reset()
	if e.zw == nil {
		zw, err := zstd.NewWriter(&e.zBuf, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithWindowSize(zstdWindow),
			zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false), zstd.WithZeroFrames(true))
		if err != nil {
			return fmt.Errorf("pagecodec: zstd: %w", err)
		}
		e.zw = zw
	}
	if _, err := e.zw.Write(data); err != nil {
		return fmt.Errorf("pagecodec: zstd: %w", err)
	}
	if err := e.zw.Flush(); err != nil {
		return fmt.Errorf("pagecodec: zstd: %w", err)
	}
	if e.zBuf.Len() == 0 || e.zBuf.Len() > zstdPageMax {
		return fmt.Errorf("pagecodec: zstd gave %d bytes for a page", e.zBuf.Len())
	}
	return nil
}

func (e *encoder) sendDelta(k uint64, data []byte) error {
	e.op = binary.AppendUvarint(e.op, uint64(len(e.delta)))
	e.op = append(e.op, e.delta...)
	s := e.st.slotFor(k) // drops the old version's index entry
	copy(e.st.page(s), data)
	return e.sent(&e.stats.Pages.Delta, e.op)
}

// store puts data in k's slot and indexes it by its checksum.
func (e *encoder) store(k uint64, data []byte, sum uint32) {
	s := e.st.slotFor(k)
	copy(e.st.page(s), data)
	for int(s) >= len(e.sums) {
		e.sums = append(e.sums, 0)
		e.hasSum = append(e.hasSum, false)
	}
	e.sums[s], e.hasSum[s] = sum, true
	e.index[sum] = s
}

// setOp sets the opcode of the operation in e.op, keeping its CONTINUE bit.
func (e *encoder) setOp(op byte) { e.op[0] = op | e.op[0]&opContinue }

func (e *encoder) sent(c *Count, op []byte) error {
	c.Pages++
	c.Bytes += int64(len(op))
	return e.emit(op)
}

// zero adds a ZERO record to the current run or starts one.
func (e *encoder) zero(rec *migstream.Record) error {
	r := &e.run
	if r.n > 0 && r.n < maxZeroRun && rec.Continue() && rec.Page() == r.page+r.n {
		r.n++
		e.stats.ZeroRecords.Pages++
		return nil
	}
	if err := e.flushRun(); err != nil {
		return err
	}
	if err := e.flushLiteral(); err != nil {
		return err
	}
	*r = zeroRun{n: 1, cont: rec.Continue(), name: rec.Block, page: rec.Page()}
	e.stats.ZeroRecords.Pages++
	return nil
}

func (e *encoder) flushRun() error {
	r := &e.run
	if r.n == 0 {
		return nil
	}
	if e.st == nil {
		return errors.New("pagecodec: a zero page before the RAM block list")
	}
	first := migstream.Record{Kind: migstream.KindZero, Addr: r.page * pageSize, Flags: migstream.FlagZero, Block: r.name}
	if r.cont {
		first.Flags |= migstream.FlagContinue
	}
	op, _, err := e.addr(e.op[:0], opZeroRun, &first) // sets e.cur to the run's block
	if err != nil {
		return err
	}
	op = binary.AppendUvarint(op, r.n-1)
	for i := range r.n {
		e.st.drop(key(e.cur, r.page+i))
	}
	e.prev = r.page + r.n - 1
	e.op = op
	e.stats.ZeroRecords.Bytes += int64(len(op))
	r.n = 0
	return e.emit(op)
}

// forget sends a forget for a record passed on as a literal.
func (e *encoder) forget(rec *migstream.Record) error {
	if err := e.flushRun(); err != nil {
		return err
	}
	if err := e.flushLiteral(); err != nil {
		return err
	}
	op, k, err := e.addr(e.op[:0], opForget, rec)
	if err != nil {
		return err
	}
	e.op = op
	if e.st != nil {
		e.st.drop(k)
	}
	if err := e.emit(op); err != nil {
		return err
	}
	return e.appendLiteral(rec)
}

func (e *encoder) literal(p []byte) error {
	e.op = binary.AppendUvarint(append(e.op[:0], opLiteral), uint64(len(p)))
	if err := e.emit(e.op); err != nil {
		return err
	}
	return e.emit(p)
}

func (e *encoder) flushLiteral() error {
	if len(e.lit) == 0 {
		return nil
	}
	err := e.literal(e.lit)
	e.lit = e.lit[:0]
	return err
}

func (e *encoder) emit(p []byte) error {
	e.stats.EncodedBytes += int64(len(p))
	if _, err := e.out.Write(p); err != nil {
		return writeErr(err)
	}
	return nil
}

// flush sends everything pending: nothing waits in the encoder while it
// waits for QEMU.
func (e *encoder) flush() error {
	if err := e.flushRun(); err != nil {
		return err
	}
	if err := e.flushLiteral(); err != nil {
		return err
	}
	if err := e.out.Flush(); err != nil {
		return writeErr(err)
	}
	if e.st != nil {
		e.stats.CachePages = int64(len(e.st.byKey))
		e.stats.CacheBytes = e.st.bytes()
		e.stats.CacheEvictions = e.st.evictions
	}
	e.stats.Spent = e.pace.spentBy(time.Now()) // for stats read while the stream runs
	if e.onFlush != nil {
		e.onFlush(e.stats)
	}
	return nil
}

func isZero(p []byte) bool {
	for i := 0; i+8 <= len(p); i += 8 {
		if binary.LittleEndian.Uint64(p[i:]) != 0 {
			return false
		}
	}
	return true
}
