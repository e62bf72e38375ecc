package blockcodectest

import "encoding/binary"

// NBD constants the builder writes (NBD protocol, doc/proto.md).
const (
	optMagic      = 0x49484156454F5054
	requestMagic  = 0x25609513
	extendedMagic = 0x21e41c71

	OptExportName      = 1
	OptGo              = 7
	OptStructuredReply = 8
	OptExtendedHeaders = 11

	CmdRead        = 0
	CmdWrite       = 1
	CmdDisc        = 2
	CmdFlush       = 3
	CmdTrim        = 4
	CmdBlockStatus = 7
	FlagPayloadLen = 1 << 5
)

// Stream builds the client's side of an NBD connection.
type Stream struct {
	B        []byte
	Extended bool // requests use 32-byte headers
	cookie   uint64
}

// Handshake appends the client flags and the options QEMU sends to open
// an export named name (structured replies, then GO; with Extended,
// extended headers first).
func (s *Stream) Handshake(name string) *Stream {
	s.B = binary.BigEndian.AppendUint32(s.B, 3) // FIXED_NEWSTYLE | NO_ZEROES
	if s.Extended {
		s.Option(OptExtendedHeaders, nil)
	}
	s.Option(OptStructuredReply, nil)
	d := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	d = append(d, name...)
	d = binary.BigEndian.AppendUint16(d, 0) // no info requests
	return s.Option(OptGo, d)
}

// Option appends an option.
func (s *Stream) Option(opt uint32, data []byte) *Stream {
	s.B = binary.BigEndian.AppendUint64(s.B, optMagic)
	s.B = binary.BigEndian.AppendUint32(s.B, opt)
	s.B = binary.BigEndian.AppendUint32(s.B, uint32(len(data)))
	s.B = append(s.B, data...)
	return s
}

// Request appends a request header; length is its header's field.
func (s *Stream) Request(typ, flags uint16, from, length uint64) *Stream {
	s.cookie++
	if s.Extended {
		s.B = binary.BigEndian.AppendUint32(s.B, extendedMagic)
	} else {
		s.B = binary.BigEndian.AppendUint32(s.B, requestMagic)
	}
	s.B = binary.BigEndian.AppendUint16(s.B, flags)
	s.B = binary.BigEndian.AppendUint16(s.B, typ)
	s.B = binary.BigEndian.AppendUint64(s.B, s.cookie)
	s.B = binary.BigEndian.AppendUint64(s.B, from)
	if s.Extended {
		s.B = binary.BigEndian.AppendUint64(s.B, length)
	} else {
		s.B = binary.BigEndian.AppendUint32(s.B, uint32(length))
	}
	return s
}

// Write appends a write of data at from.
func (s *Stream) Write(from uint64, data []byte) *Stream {
	s.Request(CmdWrite, 0, from, uint64(len(data)))
	s.B = append(s.B, data...)
	return s
}

// Disc appends NBD_CMD_DISC.
func (s *Stream) Disc() *Stream { return s.Request(CmdDisc, 0, 0, 0) }
