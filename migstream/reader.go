package migstream

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// BufferSize is the Reader's buffer. Every element the Reader parses must
// fit in it (the largest is a MEM_SIZE list of maxBlocks blocks); a bigger
// one is passed through Raw.
const BufferSize = 512 << 10

// FormatError is a malformed construct in Strict mode.
type FormatError struct {
	Offset int64 // of the element that broke the rules
	Reason string
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("migstream: offset %d: %s", e.Offset, e.Reason)
}

type state uint8

const (
	stHeader state = iota
	stConfig       // the configuration section may come next
	stTop          // between sections
	stRAM          // inside a RAM section's payload, until EOS
	stRaw          // passing bytes through
)

// errTooLarge is an element that does not fit the buffer.
var errTooLarge = errors.New("element larger than the reader's buffer")

// Reader parses a migration stream into Records. The zero value is not
// usable; use NewReader.
type Reader struct {
	// Strict makes a malformed construct an error (*FormatError) and a
	// truncated element io.ErrUnexpectedEOF. Otherwise both start Raw
	// mode, so the bytes go on exactly as they came.
	Strict bool

	br  *bufio.Reader
	err error
	off int64
	st  state
	rec Record

	ramID     uint32
	haveRAM   bool
	inStart   bool // the RAM payload being read is START's
	sawSize   bool
	blocks    map[string]uint64 // name → length, from MEM_SIZE
	blockList []RAMBlock
	cur       string // the block a CONTINUE record refers to
	haveCur   bool
	addrs     bool   // block list entries carry an address (x-ignore-shared)
	noRAM     string // a capability whose RAM format the Reader does not know
	raw       string // why Raw mode started
}

// NewReader reads a stream from r.
func NewReader(r io.Reader) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, BufferSize)}
}

// Offset is the number of stream bytes the records returned so far cover.
func (r *Reader) Offset() int64 { return r.off }

// Buffered is the number of bytes read from the source and not yet
// returned: 0 means the next Next may wait for the source.
func (r *Reader) Buffered() int { return r.br.Buffered() }

// Blocks is the RAM block list, once the MEM_SIZE record has been read.
func (r *Reader) Blocks() []RAMBlock { return r.blockList }

// RawReason says why Raw mode started, or "" while the Reader still parses.
func (r *Reader) RawReason() string { return r.raw }

// Next returns the next record. It returns io.EOF at the end of the
// stream, and after an error it returns that error again.
func (r *Reader) Next() (*Record, error) {
	if r.err != nil {
		return nil, r.err
	}
	rec, err := r.next()
	if err != nil {
		r.err = err
		return nil, err
	}
	return rec, nil
}

func (r *Reader) next() (*Record, error) {
	switch r.st {
	case stRaw:
		return r.rawChunk()
	case stHeader:
		return r.header()
	case stConfig:
		b, err := r.peek(1)
		if err != nil {
			return r.short(err, 0)
		}
		r.st = stTop
		if b[0] == typeConfig {
			return r.config()
		}
		return r.top()
	case stRAM:
		return r.ram()
	}
	return r.top()
}

// peek returns the next n bytes without consuming them. A short read at
// the end of the input returns the bytes there are and io.EOF.
func (r *Reader) peek(n int) ([]byte, error) {
	if n > BufferSize {
		return nil, errTooLarge
	}
	b, err := r.br.Peek(n)
	if len(b) == n {
		return b, nil
	}
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil, errTooLarge
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return b, err
}

// short handles a failed peek for an element whose first have bytes were
// there: a clean end, a truncated element, or a read error.
func (r *Reader) short(err error, have int) (*Record, error) {
	switch {
	case errors.Is(err, errTooLarge):
		return r.malformed(err.Error())
	case !errors.Is(err, io.EOF):
		return nil, err
	case have == 0 && r.br.Buffered() == 0:
		return nil, io.EOF
	case r.Strict:
		return nil, io.ErrUnexpectedEOF
	}
	return r.toRaw("stream ends inside an element")
}

// need peeks n bytes or reports why it cannot.
func (r *Reader) need(n int) ([]byte, *Record, error) {
	b, err := r.peek(n)
	if err != nil {
		rec, err := r.short(err, len(b))
		if rec == nil && err == nil {
			err = io.ErrUnexpectedEOF
		}
		return nil, rec, err
	}
	return b, nil, nil
}

func (r *Reader) consume(n int) {
	r.br.Discard(n)
	r.off += int64(n)
}

// toRaw passes everything from here on through, for a reason that is not
// an error in any mode (device state, a capability the Reader leaves alone).
func (r *Reader) toRaw(reason string) (*Record, error) {
	r.st = stRaw
	r.raw = reason
	rec, err := r.rawChunk()
	if rec != nil {
		rec.Reason = reason
	}
	return rec, err
}

// malformed is a construct that breaks the format's rules.
func (r *Reader) malformed(reason string) (*Record, error) {
	if r.Strict {
		return nil, &FormatError{Offset: r.off, Reason: reason}
	}
	return r.toRaw("not understood: " + reason)
}

func (r *Reader) rawChunk() (*Record, error) {
	b, err := r.br.Peek(1)
	if len(b) == 0 {
		if err == nil || errors.Is(err, bufio.ErrBufferFull) {
			err = io.ErrNoProgress
		}
		return nil, err
	}
	n := r.br.Buffered()
	b, _ = r.br.Peek(n)
	r.consume(n)
	r.rec = Record{Kind: KindRaw, Data: b}
	return &r.rec, nil
}

func (r *Reader) header() (*Record, error) {
	b, rec, err := r.need(8)
	if b == nil {
		return rec, err
	}
	if binary.BigEndian.Uint32(b) != Magic {
		return r.malformed("no QEVM magic: not a QEMU migration stream (or an encrypted one)")
	}
	if v := binary.BigEndian.Uint32(b[4:]); v != Version {
		return r.malformed(fmt.Sprintf("stream version %d, want %d", v, Version))
	}
	r.consume(8)
	r.st = stConfig
	r.rec = Record{Kind: KindHeader}
	return &r.rec, nil
}

// config parses the configuration section (savevm.c's vmstate_configuration)
// and its known subsections.
func (r *Reader) config() (*Record, error) {
	b, rec, err := r.need(5)
	if b == nil {
		return rec, err
	}
	n := int(binary.BigEndian.Uint32(b[1:]))
	if n > maxMachineName || n < 0 {
		return r.malformed(fmt.Sprintf("machine type name of %d bytes", uint32(n)))
	}
	pos := 5 + n
	if b, rec, err = r.need(pos); b == nil {
		return rec, err
	}
	out := Record{Kind: KindConfig, Machine: string(b[5:pos])}
	// Where each subsection's data lies: sliced from the buffer only at the
	// end, since a later peek may move it.
	type span struct{ from, to int }
	var at []span
	for {
		b, err = r.peek(pos + 1)
		if err != nil {
			if errors.Is(err, io.EOF) && len(b) == pos {
				break // the stream ends after the configuration
			}
			return r.short(err, len(b))
		}
		if b[pos] != typeSubsection {
			break
		}
		if b, rec, err = r.need(pos + 2); b == nil {
			return rec, err
		}
		l := int(b[pos+1])
		head := pos + 2 + l + 4
		if b, rec, err = r.need(head); b == nil {
			return rec, err
		}
		s := Subsection{Name: string(b[pos+2 : pos+2+l]), Version: binary.BigEndian.Uint32(b[head-4:])}
		size := 0
		switch s.Name {
		case "configuration/target-page-bits":
			size = 4
		case "configuration/uuid":
			size = 16
		case "configuration/capabilities":
			if b, rec, err = r.need(head + 4); b == nil {
				return rec, err
			}
			count := binary.BigEndian.Uint32(b[head:])
			if count > 64 {
				return r.malformed(fmt.Sprintf("%d capabilities in the configuration", count))
			}
			size = 4
			for range count {
				if b, rec, err = r.need(head + size + 1); b == nil {
					return rec, err
				}
				cl := int(b[head+size])
				if b, rec, err = r.need(head + size + 1 + cl); b == nil {
					return rec, err
				}
				out.Capabilities = append(out.Capabilities, string(b[head+size+1:head+size+1+cl]))
				size += 1 + cl
			}
		default:
			return r.toRaw(fmt.Sprintf("configuration subsection %q", s.Name))
		}
		if b, rec, err = r.need(head + size); b == nil {
			return rec, err
		}
		at = append(at, span{head, head + size})
		out.Subsections = append(out.Subsections, s)
		pos = head + size
	}
	for _, c := range out.Capabilities {
		switch c {
		case "x-ignore-shared":
			r.addrs = true
		case "mapped-ram":
			r.noRAM = "capability mapped-ram"
		}
	}
	b, _ = r.br.Peek(pos)
	for i, sp := range at {
		out.Subsections[i].Data = b[sp.from:sp.to]
	}
	r.consume(pos)
	r.rec = out
	return &r.rec, nil
}

// top parses whatever starts between sections.
func (r *Reader) top() (*Record, error) {
	b, err := r.peek(1)
	if err != nil {
		return r.short(err, 0)
	}
	var rec *Record
	switch b[0] {
	case typeCommand:
		if b, rec, err = r.need(5); b == nil {
			return rec, err
		}
		cmd := binary.BigEndian.Uint16(b[1:])
		n := int(binary.BigEndian.Uint16(b[3:]))
		want := -1
		switch cmd {
		case CmdOpenReturnPath, CmdSwitchoverStart:
			want = 0
		case CmdPing:
			want = 4
		default:
			return r.toRaw(fmt.Sprintf("command %d (postcopy, COLO or packaged state)", cmd))
		}
		if n != want {
			return r.malformed(fmt.Sprintf("command %d with %d bytes, want %d", cmd, n, want))
		}
		if b, rec, err = r.need(5 + n); b == nil {
			return rec, err
		}
		r.consume(5 + n)
		r.rec = Record{Kind: KindCommand, Cmd: cmd, Data: b[5 : 5+n]}
		return &r.rec, nil
	case typeStart:
		if b, rec, err = r.need(6); b == nil {
			return rec, err
		}
		l := int(b[5])
		if b, rec, err = r.need(6 + l + 8); b == nil {
			return rec, err
		}
		id := string(b[6 : 6+l])
		if id != "ram" {
			return r.toRaw(fmt.Sprintf("section %q", id))
		}
		if r.noRAM != "" {
			return r.toRaw(r.noRAM)
		}
		out := Record{Kind: KindSectionStart, Section: binary.BigEndian.Uint32(b[1:]), IDStr: id,
			Instance: binary.BigEndian.Uint32(b[6+l:]), SecVer: binary.BigEndian.Uint32(b[10+l:])}
		if out.SecVer != RAMSectionVersion || out.Instance != 0 {
			return r.malformed(fmt.Sprintf("ram section instance %d version %d", out.Instance, out.SecVer))
		}
		if r.haveRAM {
			return r.malformed("a second ram START section")
		}
		r.consume(6 + l + 8)
		r.ramID, r.haveRAM, r.inStart, r.st = out.Section, true, true, stRAM
		r.rec = out
		return &r.rec, nil
	case typePart, typeEnd:
		if b, rec, err = r.need(5); b == nil {
			return rec, err
		}
		id := binary.BigEndian.Uint32(b[1:])
		if !r.haveRAM || id != r.ramID {
			return r.malformed(fmt.Sprintf("section %d continued without a START", id))
		}
		kind := KindSectionPart
		if b[0] == typeEnd {
			kind = KindSectionEnd
		}
		r.consume(5)
		r.inStart, r.st = false, stRAM
		r.rec = Record{Kind: kind, Section: id}
		return &r.rec, nil
	case typeFooter:
		if b, rec, err = r.need(5); b == nil {
			return rec, err
		}
		r.consume(5)
		r.rec = Record{Kind: KindFooter, Section: binary.BigEndian.Uint32(b[1:])}
		return &r.rec, nil
	case typeFull:
		return r.toRaw("device state")
	case typeEOF, typeVMDesc:
		return r.toRaw("end of device state")
	}
	return r.malformed(fmt.Sprintf("section type 0x%02x", b[0]))
}

// ram parses one RAM record (ram_load_precopy in QEMU's migration/ram.c).
func (r *Reader) ram() (*Record, error) {
	b, rec, err := r.need(8)
	if b == nil {
		if r.Strict && errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF // a RAM section ends with EOS
		}
		return rec, err
	}
	word := binary.BigEndian.Uint64(b)
	flags := uint16(word & flagMask)
	addr := word &^ flagMask
	switch flags &^ FlagContinue {
	case FlagEOS:
		r.consume(8)
		r.st = stTop
		r.rec = Record{Kind: KindEOS, Addr: addr, Flags: flags}
		return &r.rec, nil
	case FlagMultifdFlush:
		r.consume(8)
		r.rec = Record{Kind: KindMultifdFlush, Addr: addr, Flags: flags}
		return &r.rec, nil
	case FlagMemSize:
		return r.memSize(addr, flags)
	case FlagZero, FlagPage, FlagXBZRLE, FlagCompressPage:
		return r.page(addr, flags)
	}
	return r.malformed(fmt.Sprintf("RAM record flags 0x%03x", flags))
}

func (r *Reader) memSize(total uint64, flags uint16) (*Record, error) {
	if !r.inStart || r.sawSize {
		return r.malformed("MEM_SIZE outside the ram START section")
	}
	out := Record{Kind: KindMemSize, Addr: total, Flags: flags}
	pos := 8
	var sum uint64
	var b []byte
	var rec *Record
	var err error
	for sum < total {
		if len(out.Blocks) == maxBlocks {
			return r.malformed(fmt.Sprintf("more than %d RAM blocks", maxBlocks))
		}
		if b, rec, err = r.need(pos + 1); b == nil {
			return rec, err
		}
		l := int(b[pos])
		if l == 0 {
			return r.malformed("RAM block with an empty name")
		}
		size := 1 + l + 8
		if r.addrs {
			size += 8
		}
		if b, rec, err = r.need(pos + size); b == nil {
			return rec, err
		}
		blk := RAMBlock{Name: string(b[pos+1 : pos+1+l]), Length: binary.BigEndian.Uint64(b[pos+1+l:])}
		if r.addrs {
			blk.Addr, blk.HasAddr = binary.BigEndian.Uint64(b[pos+1+l+8:]), true
		}
		if blk.Length > total-sum {
			return r.malformed(fmt.Sprintf("RAM block %q of %d bytes overruns the total of %d", blk.Name, blk.Length, total))
		}
		if blk.Length == 0 {
			return r.malformed(fmt.Sprintf("RAM block %q of 0 bytes", blk.Name))
		}
		sum += blk.Length
		out.Blocks = append(out.Blocks, blk)
		pos += size
	}
	blocks := make(map[string]uint64, len(out.Blocks))
	for _, blk := range out.Blocks {
		if _, dup := blocks[blk.Name]; dup {
			return r.malformed(fmt.Sprintf("RAM block %q listed twice", blk.Name))
		}
		blocks[blk.Name] = blk.Length
	}
	r.consume(pos)
	r.sawSize, r.blocks, r.blockList = true, blocks, out.Blocks
	r.rec = out
	return &r.rec, nil
}

func (r *Reader) page(addr uint64, flags uint16) (*Record, error) {
	pos := 8
	name := r.cur
	var b []byte
	var rec *Record
	var err error
	if flags&FlagContinue != 0 {
		if !r.haveCur {
			return r.malformed("CONTINUE with no block before it")
		}
	} else {
		if b, rec, err = r.need(9); b == nil {
			return rec, err
		}
		l := int(b[8])
		if l == 0 {
			return r.malformed("RAM record with an empty block name")
		}
		if b, rec, err = r.need(9 + l); b == nil {
			return rec, err
		}
		if id := b[9 : 9+l]; string(id) != r.cur || !r.haveCur {
			name = string(id)
		}
		pos = 9 + l
	}
	length, known := r.blocks[name]
	if !known {
		return r.malformed(fmt.Sprintf("RAM record for unknown block %q", name))
	}
	if addr >= length || length-addr < PageSize {
		return r.malformed(fmt.Sprintf("RAM record at offset %#x past the end of block %q (%#x)", addr, name, length))
	}
	out := Record{Addr: addr, Flags: flags, Block: name}
	switch flags &^ FlagContinue {
	case FlagZero:
		if b, rec, err = r.need(pos + 1); b == nil {
			return rec, err
		}
		out.Kind, out.Fill = KindZero, b[pos]
		pos++
	case FlagPage:
		if b, rec, err = r.need(pos + PageSize); b == nil {
			return rec, err
		}
		out.Kind, out.Data = KindPage, b[pos:pos+PageSize]
		pos += PageSize
	case FlagXBZRLE:
		if b, rec, err = r.need(pos + 3); b == nil {
			return rec, err
		}
		if b[pos] != xbzrleEncodingFlag {
			return r.malformed(fmt.Sprintf("XBZRLE encoding flag 0x%02x", b[pos]))
		}
		n := int(binary.BigEndian.Uint16(b[pos+1:]))
		if n > PageSize {
			return r.malformed(fmt.Sprintf("XBZRLE record of %d bytes", n))
		}
		if b, rec, err = r.need(pos + 3 + n); b == nil {
			return rec, err
		}
		out.Kind, out.Data = KindXBZRLE, b[pos+3:pos+3+n]
		pos += 3 + n
	case FlagCompressPage:
		if b, rec, err = r.need(pos + 4); b == nil {
			return rec, err
		}
		n := binary.BigEndian.Uint32(b[pos:])
		if n > maxCompressed {
			return r.malformed(fmt.Sprintf("compressed page of %d bytes", n))
		}
		if b, rec, err = r.need(pos + 4 + int(n)); b == nil {
			return rec, err
		}
		out.Kind, out.Data = KindCompressed, b[pos+4:pos+4+int(n)]
		pos += 4 + int(n)
	}
	r.consume(pos)
	r.cur, r.haveCur = name, true
	r.rec = out
	return &r.rec, nil
}
