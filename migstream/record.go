package migstream

import (
	"encoding/binary"
	"fmt"
)

// Stream constants, from QEMU's migration/savevm.h and migration/savevm.c.
const (
	Magic   = 0x5145564d // "QEVM", QEMU_VM_FILE_MAGIC
	Version = 3          // QEMU_VM_FILE_VERSION

	// PageSize is the target page of x86, the unit of RAM records.
	PageSize = 4096
)

// Top-level section type bytes (QEMU_VM_*, migration/savevm.h).
const (
	typeEOF        = 0x00
	typeStart      = 0x01
	typePart       = 0x02
	typeEnd        = 0x03
	typeFull       = 0x04
	typeSubsection = 0x05
	typeVMDesc     = 0x06
	typeConfig     = 0x07
	typeCommand    = 0x08
	typeFooter     = 0x7e
)

// RAM record flags (RAM_SAVE_FLAG_*, migration/ram.c in 7.2, migration/ram.h
// in 10.0). They sit in the low bits of each record's be64 word.
const (
	FlagFull         = 0x01 // obsolete since 2009, never sent
	FlagZero         = 0x02
	FlagMemSize      = 0x04
	FlagPage         = 0x08
	FlagEOS          = 0x10
	FlagContinue     = 0x20
	FlagXBZRLE       = 0x40
	FlagHook         = 0x80 // RDMA only
	FlagCompressPage = 0x100
	FlagMultifdFlush = 0x200 // 8.1+, multifd only

	flagMask = PageSize - 1
)

// Commands (MIG_CMD_*, migration/savevm.c) the Reader parses; any other
// command changes the stream's format (postcopy, COLO, packaged state).
const (
	CmdOpenReturnPath  = 1
	CmdPing            = 2
	CmdPostcopyAdvise  = 3
	CmdSwitchoverStart = 11 // 10.0+
)

// Limits the Reader holds every length to before it reads the bytes.
const (
	// RAMSectionVersion is the only version of the "ram" section QEMU loads.
	RAMSectionVersion = 4
	maxMachineName    = 256
	maxBlocks         = 1024
	// xbzrleEncodingFlag is ENCODING_FLAG_XBZRLE, the byte before an
	// XBZRLE record's length.
	xbzrleEncodingFlag = 0x01
	// maxCompressed is zlib's compressBound(PageSize), the most a
	// COMPRESS_PAGE record may carry.
	maxCompressed = PageSize + PageSize>>12 + PageSize>>14 + PageSize>>25 + 13
)

// Kind says what a Record is.
type Kind uint8

const (
	KindHeader       Kind = iota + 1 // "QEVM", version 3
	KindConfig                       // the configuration section
	KindCommand                      // a QEMU_VM_COMMAND
	KindSectionStart                 // START of the RAM section
	KindSectionPart                  // PART of the RAM section
	KindSectionEnd                   // END of the RAM section
	KindFooter                       // a section footer
	KindMemSize                      // RAM: total size and the block list
	KindZero                         // RAM: a page of one byte value
	KindPage                         // RAM: a whole page
	KindXBZRLE                       // RAM: a delta against the destination's page
	KindCompressed                   // RAM: a zlib-compressed page
	KindEOS                          // RAM: end of this section's RAM data
	KindMultifdFlush                 // RAM: multifd sync point
	KindRaw                          // bytes passed through unparsed
)

var kindNames = [...]string{
	KindHeader: "header", KindConfig: "config", KindCommand: "command",
	KindSectionStart: "start", KindSectionPart: "part", KindSectionEnd: "end",
	KindFooter: "footer", KindMemSize: "mem-size", KindZero: "zero", KindPage: "page",
	KindXBZRLE: "xbzrle", KindCompressed: "compressed", KindEOS: "eos",
	KindMultifdFlush: "multifd-flush", KindRaw: "raw",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// IsRAM reports whether records of kind k are RAM records (a be64 word of
// offset and flags first).
func (k Kind) IsRAM() bool { return k >= KindMemSize && k <= KindMultifdFlush }

// HasBlock reports whether records of kind k name a block, by idstr or by
// CONTINUE.
func (k Kind) HasBlock() bool { return k >= KindZero && k <= KindCompressed }

// RAMBlock is one entry of the MEM_SIZE block list.
type RAMBlock struct {
	Name   string
	Length uint64
	// Addr is the block's guest-physical address, sent only with the
	// x-ignore-shared capability (HasAddr).
	Addr    uint64
	HasAddr bool
}

// Subsection is one subsection of the configuration section.
type Subsection struct {
	Name    string
	Version uint32
	Data    []byte // its fields, whose layout the name decides
}

// Record is one element of the stream. Which fields mean something depends
// on Kind. Byte slices point into the Reader's buffer and are valid until
// the next call to Next.
type Record struct {
	Kind Kind

	// KindConfig.
	Machine      string
	Subsections  []Subsection
	Capabilities []string // from configuration/capabilities

	// KindCommand.
	Cmd uint16

	// KindSectionStart, Part, End, Footer.
	Section uint32
	// KindSectionStart.
	IDStr    string
	Instance uint32
	SecVer   uint32

	// RAM records: the be64 word is Addr | Flags.
	Addr  uint64
	Flags uint16
	// Block is the RAM block of a record that has one: named in the
	// record, or the previous one's when Flags has FlagContinue.
	Block string
	// Fill is the byte a ZERO record fills its page with.
	Fill byte
	// Blocks and Addr (the total) for KindMemSize.
	Blocks []RAMBlock

	// Data: the page (KindPage), the encoded delta (KindXBZRLE), the zlib
	// stream (KindCompressed), the command's data (KindCommand), or the
	// bytes themselves (KindRaw).
	Data []byte
	// Reason says, on the first Raw record, why parsing stopped.
	Reason string
}

// Continue reports whether a RAM record says CONTINUE (no idstr).
func (r *Record) Continue() bool { return r.Flags&FlagContinue != 0 }

// Page is the page number of a RAM record (its offset in the block over the
// page size).
func (r *Record) Page() uint64 { return r.Addr / PageSize }

// AppendRecord appends the bytes of r as QEMU writes them. Records read by
// a Reader come back byte for byte.
func AppendRecord(b []byte, r *Record) []byte {
	switch r.Kind {
	case KindHeader:
		b = binary.BigEndian.AppendUint32(b, Magic)
		return binary.BigEndian.AppendUint32(b, Version)
	case KindConfig:
		b = append(b, typeConfig)
		b = binary.BigEndian.AppendUint32(b, uint32(len(r.Machine)))
		b = append(b, r.Machine...)
		for _, s := range r.Subsections {
			b = append(b, typeSubsection, byte(len(s.Name)))
			b = append(b, s.Name...)
			b = binary.BigEndian.AppendUint32(b, s.Version)
			b = append(b, s.Data...)
		}
		return b
	case KindCommand:
		b = append(b, typeCommand)
		b = binary.BigEndian.AppendUint16(b, r.Cmd)
		b = binary.BigEndian.AppendUint16(b, uint16(len(r.Data)))
		return append(b, r.Data...)
	case KindSectionStart:
		b = append(b, typeStart)
		b = binary.BigEndian.AppendUint32(b, r.Section)
		b = append(b, byte(len(r.IDStr)))
		b = append(b, r.IDStr...)
		b = binary.BigEndian.AppendUint32(b, r.Instance)
		return binary.BigEndian.AppendUint32(b, r.SecVer)
	case KindSectionPart, KindSectionEnd, KindFooter:
		t := byte(typePart)
		switch r.Kind {
		case KindSectionEnd:
			t = typeEnd
		case KindFooter:
			t = typeFooter
		}
		b = append(b, t)
		return binary.BigEndian.AppendUint32(b, r.Section)
	case KindRaw:
		return append(b, r.Data...)
	}
	// RAM records.
	b = binary.BigEndian.AppendUint64(b, r.Addr|uint64(r.Flags))
	switch r.Kind {
	case KindMemSize:
		for _, blk := range r.Blocks {
			b = append(b, byte(len(blk.Name)))
			b = append(b, blk.Name...)
			b = binary.BigEndian.AppendUint64(b, blk.Length)
			if blk.HasAddr {
				b = binary.BigEndian.AppendUint64(b, blk.Addr)
			}
		}
		return b
	case KindEOS, KindMultifdFlush:
		return b
	}
	b = AppendBlockName(b, r)
	switch r.Kind {
	case KindZero:
		return append(b, r.Fill)
	case KindXBZRLE:
		b = append(b, xbzrleEncodingFlag)
		b = binary.BigEndian.AppendUint16(b, uint16(len(r.Data)))
	case KindCompressed:
		b = binary.BigEndian.AppendUint32(b, uint32(len(r.Data)))
	}
	return append(b, r.Data...)
}

// AppendBlockName appends a RAM record's idstr, length first, unless the
// record says CONTINUE.
func AppendBlockName(b []byte, r *Record) []byte {
	if r.Continue() {
		return b
	}
	b = append(b, byte(len(r.Block)))
	return append(b, r.Block...)
}

// AppendPageHeader appends the header of a PAGE record (its word and, unless
// cont, the block's idstr); the page's bytes follow it.
func AppendPageHeader(b []byte, page uint64, cont bool, block string) []byte {
	flags := uint64(FlagPage)
	if cont {
		return binary.BigEndian.AppendUint64(b, page*PageSize|flags|FlagContinue)
	}
	b = binary.BigEndian.AppendUint64(b, page*PageSize|flags)
	b = append(b, byte(len(block)))
	return append(b, block...)
}
