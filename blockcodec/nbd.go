package blockcodec

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// NBD constants, from the NBD protocol (NetworkBlockDevice/nbd,
// doc/proto.md) and QEMU's include/block/nbd.h.
const (
	nbdOptMagic      = 0x49484156454F5054 // "IHAVEOPT"
	nbdRequestMagic  = 0x25609513         // NBD_REQUEST_MAGIC
	nbdExtendedMagic = 0x21e41c71         // NBD_EXTENDED_REQUEST_MAGIC (QEMU 9+)

	NBDCmdRead        = 0
	NBDCmdWrite       = 1
	NBDCmdDisc        = 2
	NBDCmdFlush       = 3
	NBDCmdTrim        = 4
	NBDCmdWriteZeroes = 6
	// NBDFlagPayloadLen (NBD_CMD_FLAG_PAYLOAD_LEN) says, with extended
	// headers, that a command other than a write carries Length bytes of
	// payload too.
	NBDFlagPayloadLen = 1 << 5

	clientFlagsLen    = 4
	optionHeaderLen   = 16 // magic, option, length
	simpleHeaderLen   = 28
	extendedHeaderLen = 32
)

// Parser bounds.
const (
	// MaxOptionLen bounds an option's data. The longest QEMU sends is an
	// export name (at most 4096 bytes by the protocol) with a few meta
	// contexts.
	MaxOptionLen = 64 << 10
	// MaxPayload bounds a request's payload: QEMU's NBD_MAX_BUFFER_SIZE
	// (include/block/nbd.h). QEMU's server drops a client that sends more.
	MaxPayload = 32 << 20
	// readerBuffer holds the longest item the reader peeks at: an option.
	readerBuffer = 128 << 10
)

// Kind is what an Item of the client's stream is.
type Kind uint8

// Item kinds.
const (
	KindClientFlags Kind = iota + 1 // the 4 bytes of client flags that open the stream
	KindOption                      // an option of the handshake, with its data
	KindRequest                     // a request header of the transmission phase
)

var kindNames = [...]string{KindClientFlags: "client flags", KindOption: "option", KindRequest: "request"}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Item is one element of the client's side of an NBD connection.
type Item struct {
	Kind Kind
	// Raw is the item as it was read: the 4 flag bytes, an option's
	// header and data, a request's 28 or 32 header bytes. It is valid
	// until the next call to Next or Read.
	Raw    []byte
	Offset int64 // of the item in the stream

	Option uint32 // KindOption: the option

	// KindRequest: the header's fields. Extended is a 32-byte header
	// (NBD_OPT_EXTENDED_HEADERS), whose Length has 64 bits.
	Extended bool
	Flags    uint16
	Type     uint16
	Cookie   uint64
	From     uint64 // the request's offset on the disk
	Length   uint64
	// Payload is how many bytes follow the header: Length for a write,
	// or for a command with NBDFlagPayloadLen in extended mode; else 0.
	Payload int64
}

// IsWrite reports whether the item is an NBD_CMD_WRITE with a payload.
func (it *Item) IsWrite() bool {
	return it.Kind == KindRequest && it.Type == NBDCmdWrite && it.Payload > 0
}

// FormatError is a client stream the Reader cannot parse. The item's
// bytes are still unread: Rest returns them.
type FormatError struct {
	Offset int64
	Reason string
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("nbd: client stream at byte %d: %s", e.Offset, e.Reason)
}

// Reader parses the client's side of an NBD connection (fixed newstyle
// handshake, then transmission) without reading the server's side: after
// the client flags, the next magic says what comes, IHAVEOPT an option,
// NBD_REQUEST_MAGIC or NBD_EXTENDED_REQUEST_MAGIC a request. Next returns
// the items, Read the payload of the last one. It is a pure parser, with
// no goroutines; its errors are sticky: io.EOF at a clean end between
// items, io.ErrUnexpectedEOF for an item or payload cut short, a
// *FormatError for bytes it does not know, or the underlying reader's.
// An item is peeked whole before it is taken, so after an error from Next
// its bytes are still in Rest.
type Reader struct {
	r       *bufio.Reader
	off     int64 // of the next byte not taken
	started bool  // past the client flags
	payload int64 // of the current item, not yet read
	err     error
	item    Item
}

// NewReader returns a Reader of r.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, readerBuffer)}
}

// Offset is how many bytes of the stream the reader has taken.
func (r *Reader) Offset() int64 { return r.off }

// Buffered is how many bytes were read from the stream and not taken yet.
func (r *Reader) Buffered() int { return r.r.Buffered() }

// Rest is the stream from the first byte not taken: after an error of
// Next, the bytes of the item it refused.
func (r *Reader) Rest() io.Reader { return r.r }

func (r *Reader) fail(err error) error {
	r.err = err
	return err
}

// peek returns the next n bytes without taking them; a stream that ends
// before them is io.ErrUnexpectedEOF (or io.EOF if it ended first).
func (r *Reader) peek(n int, atStart bool) ([]byte, error) {
	b, err := r.r.Peek(n)
	if len(b) == n {
		return b, nil
	}
	if errors.Is(err, io.EOF) {
		if atStart && len(b) == 0 {
			return nil, io.EOF
		}
		return nil, io.ErrUnexpectedEOF
	}
	return nil, err
}

// Next skips what is left of the current item's payload and returns the
// next item.
func (r *Reader) Next() (*Item, error) {
	if r.err != nil {
		return nil, r.err
	}
	if r.payload > 0 {
		n, err := r.r.Discard(int(r.payload))
		r.off += int64(n)
		r.payload -= int64(n)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, r.fail(err)
		}
	}
	it := &r.item
	*it = Item{Offset: r.off}
	if !r.started {
		b, err := r.peek(clientFlagsLen, true)
		if err != nil {
			return nil, r.fail(err)
		}
		it.Kind, it.Raw = KindClientFlags, b
		r.started = true
		return r.take(it)
	}
	m, err := r.peek(4, true)
	if err != nil {
		return nil, r.fail(err)
	}
	switch binary.BigEndian.Uint32(m) {
	case nbdOptMagic >> 32:
		h, err := r.peek(optionHeaderLen, false)
		if err != nil {
			return nil, r.fail(err)
		}
		if binary.BigEndian.Uint64(h) != nbdOptMagic {
			return nil, r.fail(&FormatError{r.off, fmt.Sprintf("magic %#x", h[:8])})
		}
		n := binary.BigEndian.Uint32(h[12:])
		if n > MaxOptionLen {
			return nil, r.fail(&FormatError{r.off, fmt.Sprintf("option %d with %d bytes of data, more than the %d bytes bound", binary.BigEndian.Uint32(h[8:]), n, MaxOptionLen)})
		}
		b, err := r.peek(optionHeaderLen+int(n), false)
		if err != nil {
			return nil, r.fail(err)
		}
		it.Kind, it.Raw, it.Option = KindOption, b, binary.BigEndian.Uint32(h[8:])
		return r.take(it)
	case nbdRequestMagic:
		h, err := r.peek(simpleHeaderLen, false)
		if err != nil {
			return nil, r.fail(err)
		}
		it.Length = uint64(binary.BigEndian.Uint32(h[24:]))
		it.Raw = h
	case nbdExtendedMagic:
		h, err := r.peek(extendedHeaderLen, false)
		if err != nil {
			return nil, r.fail(err)
		}
		it.Length = binary.BigEndian.Uint64(h[24:])
		it.Raw, it.Extended = h, true
	default:
		return nil, r.fail(&FormatError{r.off, fmt.Sprintf("no option or request magic: %#x", m)})
	}
	h := it.Raw
	it.Kind = KindRequest
	it.Flags = binary.BigEndian.Uint16(h[4:])
	it.Type = binary.BigEndian.Uint16(h[6:])
	it.Cookie = binary.BigEndian.Uint64(h[8:])
	it.From = binary.BigEndian.Uint64(h[16:])
	if it.Type == NBDCmdWrite || it.Extended && it.Flags&NBDFlagPayloadLen != 0 {
		if it.Length > MaxPayload {
			return nil, r.fail(&FormatError{r.off, fmt.Sprintf("request type %d with a payload of %d bytes, more than the %d MiB bound", it.Type, it.Length, MaxPayload>>20)})
		}
		it.Payload = int64(it.Length)
	}
	if _, err := r.take(it); err != nil {
		return nil, err
	}
	r.payload = it.Payload
	return it, nil
}

// take consumes the item's bytes, which were peeked.
func (r *Reader) take(it *Item) (*Item, error) {
	n, err := r.r.Discard(len(it.Raw))
	r.off += int64(n)
	if err != nil { // cannot happen: the bytes are buffered
		return nil, r.fail(err)
	}
	return it, nil
}

// Read reads the current item's payload; io.EOF at its end.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.payload == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.payload {
		p = p[:r.payload]
	}
	n, err := r.r.Read(p)
	r.off += int64(n)
	r.payload -= int64(n)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return n, r.fail(err)
	}
	return n, nil
}
