// Package migstreamtest builds synthetic QEMU migration streams for tests
// and benchmarks of the stream reader and the page codec: the same framing
// QEMU 7.2 writes (header, configuration, a RAM START with its block list,
// PART sections of page records, an END section, then device state), with
// page contents chosen by the test.
package migstreamtest

import (
	"bytes"
	"encoding/binary"

	"github.com/vmigrate/vmigrate/migstream"
)

// RAMSection is the section id the builder gives the RAM section.
const RAMSection = 2

// Builder writes a stream into memory. Its methods append in stream order;
// Bytes returns the result.
type Builder struct {
	buf     bytes.Buffer
	w       *migstream.Writer
	last    string
	hasLast bool
}

// NewBuilder starts a stream: header and the configuration section of a
// pc-q35-7.2 machine, with the given configuration subsections.
func NewBuilder(subs ...migstream.Subsection) *Builder {
	b := &Builder{}
	b.w = migstream.NewWriter(&b.buf)
	b.rec(migstream.Record{Kind: migstream.KindHeader})
	b.rec(migstream.Record{Kind: migstream.KindConfig, Machine: "pc-q35-7.2", Subsections: subs})
	return b
}

func (b *Builder) rec(r migstream.Record) *Builder {
	b.w.WriteRecord(&r) // a bytes.Buffer does not fail
	return b
}

// Command appends a QEMU_VM_COMMAND.
func (b *Builder) Command(cmd uint16, data []byte) *Builder {
	return b.rec(migstream.Record{Kind: migstream.KindCommand, Cmd: cmd, Data: data})
}

// Start appends the RAM START section: MEM_SIZE with blocks, EOS, footer.
func (b *Builder) Start(blocks ...migstream.RAMBlock) *Builder {
	var total uint64
	for _, blk := range blocks {
		total += blk.Length
	}
	b.rec(migstream.Record{Kind: migstream.KindSectionStart, Section: RAMSection, IDStr: "ram", SecVer: migstream.RAMSectionVersion})
	b.rec(migstream.Record{Kind: migstream.KindMemSize, Addr: total, Flags: migstream.FlagMemSize, Blocks: blocks})
	return b.EOS()
}

// Part opens a PART section of the RAM section.
func (b *Builder) Part() *Builder {
	return b.rec(migstream.Record{Kind: migstream.KindSectionPart, Section: RAMSection})
}

// End opens the END section of the RAM section.
func (b *Builder) End() *Builder {
	return b.rec(migstream.Record{Kind: migstream.KindSectionEnd, Section: RAMSection})
}

// EOS closes a RAM payload and appends its footer.
func (b *Builder) EOS() *Builder {
	b.rec(migstream.Record{Kind: migstream.KindEOS, Flags: migstream.FlagEOS})
	return b.rec(migstream.Record{Kind: migstream.KindFooter, Section: RAMSection})
}

func (b *Builder) flags(block string, f uint16) uint16 {
	if b.hasLast && block == b.last {
		f |= migstream.FlagContinue
	}
	b.last, b.hasLast = block, true
	return f
}

// Page appends a PAGE record (CONTINUE when the block is the last one's).
func (b *Builder) Page(block string, page uint64, data []byte) *Builder {
	return b.rec(migstream.Record{Kind: migstream.KindPage, Addr: page * migstream.PageSize,
		Flags: b.flags(block, migstream.FlagPage), Block: block, Data: data})
}

// Zero appends a ZERO record.
func (b *Builder) Zero(block string, page uint64) *Builder {
	return b.rec(migstream.Record{Kind: migstream.KindZero, Addr: page * migstream.PageSize,
		Flags: b.flags(block, migstream.FlagZero), Block: block})
}

// XBZRLE appends an XBZRLE record with an encoded delta.
func (b *Builder) XBZRLE(block string, page uint64, delta []byte) *Builder {
	return b.rec(migstream.Record{Kind: migstream.KindXBZRLE, Addr: page * migstream.PageSize,
		Flags: b.flags(block, migstream.FlagXBZRLE), Block: block, Data: delta})
}

// DeviceState appends a FULL section of n opaque bytes, EOF and a vmdesc.
func (b *Builder) DeviceState(n int) *Builder {
	b.buf.Write([]byte{0x04, 0, 0, 0, 0, 5, 't', 'i', 'm', 'e', 'r', 0, 0, 0, 0, 0, 0, 0, 2})
	for i := range n {
		b.buf.WriteByte(byte(i * 7))
	}
	b.buf.Write([]byte{0x7e, 0, 0, 0, 0, 0x00, 0x06})
	desc := []byte(`{"page_size":4096,"devices":[]}`)
	b.buf.Write(binary.BigEndian.AppendUint32(nil, uint32(len(desc))))
	b.buf.Write(desc)
	return b
}

// Raw appends bytes as they are.
func (b *Builder) Raw(p []byte) *Builder {
	b.buf.Write(p)
	return b
}

// Bytes is the stream so far.
func (b *Builder) Bytes() []byte { return bytes.Clone(b.buf.Bytes()) }

// Blocks is a small machine's RAM: pc.ram of ramPages pages and two ROMs.
func Blocks(ramPages uint64) []migstream.RAMBlock {
	return []migstream.RAMBlock{
		{Name: "pc.ram", Length: ramPages * migstream.PageSize},
		{Name: "pc.bios", Length: 64 * migstream.PageSize},
		{Name: "/rom@etc/acpi/tables", Length: 32 * migstream.PageSize},
	}
}
