package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Frame header layout and limits; PROTOCOL.md "Frames" is the reference.
const (
	// FrameHeaderLen is the fixed size of a frame header:
	// type u8, flags u8, reserved u16, channel u32, length u32, big-endian.
	FrameHeaderLen = 12

	// MaxNameLen bounds an OPEN payload, the channel name.
	MaxNameLen = 255
	// MaxReasonLen bounds the reason text of RESET and GOAWAY.
	MaxReasonLen = 1024
	// pingLen is the payload length of PING and PONG.
	pingLen = 8
	// windowLen is the payload length of WINDOW.
	windowLen = 4
	// codeLen is the code that starts a RESET or GOAWAY payload.
	codeLen = 4
)

// FrameType is the first byte of a frame header.
type FrameType uint8

// Frame types of protocol version 1.
const (
	FrameOpen   FrameType = 0x01 // open a channel; payload: its name
	FrameData   FrameType = 0x02 // channel bytes; payload: the bytes
	FrameWindow FrameType = 0x03 // grant send credit; payload: u32 increment
	FrameClose  FrameType = 0x04 // half-close: the sender sends no more DATA
	FrameReset  FrameType = 0x05 // abort a channel; payload: u32 code, reason
	FramePing   FrameType = 0x06 // payload: 8 opaque bytes, echoed in PONG
	FramePong   FrameType = 0x07 // payload: the PING's 8 bytes
	FrameGoAway FrameType = 0x08 // session ends; payload: u32 code, reason
)

func (t FrameType) String() string {
	switch t {
	case FrameOpen:
		return "OPEN"
	case FrameData:
		return "DATA"
	case FrameWindow:
		return "WINDOW"
	case FrameClose:
		return "CLOSE"
	case FrameReset:
		return "RESET"
	case FramePing:
		return "PING"
	case FramePong:
		return "PONG"
	case FrameGoAway:
		return "GOAWAY"
	}
	return fmt.Sprintf("FrameType(%#02x)", uint8(t))
}

// onChannel reports whether frames of type t name a channel (id != 0);
// the others are session frames on channel 0.
func (t FrameType) onChannel() bool {
	return t >= FrameOpen && t <= FrameReset
}

// Flags is the second byte of a frame header. Version 1 defines no flags:
// a writer sends 0 and a reader rejects any set bit, so a flag can only be
// used once both peers announced the feature or version that defines it.
type Flags uint8

// Frame is one decoded frame. For frames returned by FrameReader.Next,
// Payload aliases the reader's buffer and is valid until the next call.
type Frame struct {
	Type    FrameType
	Flags   Flags
	Channel uint32
	Payload []byte
}

func (f Frame) String() string {
	return fmt.Sprintf("%v ch=%d len=%d", f.Type, f.Channel, len(f.Payload))
}

// checkFrame validates everything about a frame that does not depend on
// session state: a known type, no flags, the channel id rule of its type and
// its payload length. maxData bounds DATA payloads.
func checkFrame(t FrameType, flags Flags, reserved uint16, ch uint32, n uint32, maxData int) error {
	if t < FrameOpen || t > FrameGoAway {
		return fmt.Errorf("%w: unknown frame type %#02x", ErrProtocol, uint8(t))
	}
	if flags != 0 {
		return fmt.Errorf("%w: %v frame with unknown flags %#02x", ErrProtocol, t, uint8(flags))
	}
	if reserved != 0 {
		return fmt.Errorf("%w: %v frame with non-zero reserved field %#04x", ErrProtocol, t, reserved)
	}
	if t.onChannel() != (ch != 0) {
		if ch == 0 {
			return fmt.Errorf("%w: %v frame on channel 0", ErrProtocol, t)
		}
		return fmt.Errorf("%w: %v frame on channel %d, want 0", ErrProtocol, t, ch)
	}
	var lo, hi uint32
	switch t {
	case FrameOpen:
		lo, hi = 1, MaxNameLen
	case FrameData:
		lo, hi = 0, uint32(maxData)
	case FrameWindow:
		lo, hi = windowLen, windowLen
	case FrameClose:
		lo, hi = 0, 0
	case FrameReset, FrameGoAway:
		lo, hi = codeLen, codeLen+MaxReasonLen
	case FramePing, FramePong:
		lo, hi = pingLen, pingLen
	}
	if n < lo || n > hi {
		if lo == hi {
			return fmt.Errorf("%w: %v frame of %d bytes, want %d", ErrProtocol, t, n, lo)
		}
		return fmt.Errorf("%w: %v frame of %d bytes, want %d..%d", ErrProtocol, t, n, lo, hi)
	}
	return nil
}

// FrameReader reads frames from a byte stream. It starts no goroutines and
// reads nothing ahead of the frame it returns. Its first error is sticky.
type FrameReader struct {
	r       io.Reader
	maxData int
	hdr     [FrameHeaderLen]byte
	buf     []byte
	err     error
}

// NewFrameReader returns a reader that accepts DATA payloads of up to
// maxData bytes (clamped to MinMaxPayload..MaxMaxPayload).
func NewFrameReader(r io.Reader, maxData int) *FrameReader {
	return &FrameReader{r: r, maxData: clamp(maxData, MinMaxPayload, MaxMaxPayload)}
}

// Next reads the next frame. It returns io.EOF only when the stream ends
// exactly between two frames, io.ErrUnexpectedEOF when it ends inside one,
// and an error wrapping ErrProtocol for a header that breaks PROTOCOL.md (the
// payload length is checked before anything is allocated or read). After an
// error every call returns the same error.
func (fr *FrameReader) Next() (Frame, error) {
	if fr.err != nil {
		return Frame{}, fr.err
	}
	f, err := fr.next()
	if err != nil {
		fr.err = err
	}
	return f, err
}

func (fr *FrameReader) next() (Frame, error) {
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		return Frame{}, err // io.EOF if no byte came, io.ErrUnexpectedEOF if some did
	}
	t := FrameType(fr.hdr[0])
	flags := Flags(fr.hdr[1])
	reserved := binary.BigEndian.Uint16(fr.hdr[2:4])
	ch := binary.BigEndian.Uint32(fr.hdr[4:8])
	n := binary.BigEndian.Uint32(fr.hdr[8:12])
	if err := checkFrame(t, flags, reserved, ch, n, fr.maxData); err != nil {
		return Frame{}, err
	}
	if int(n) > cap(fr.buf) {
		fr.buf = make([]byte, n)
	}
	p := fr.buf[:n]
	if _, err := io.ReadFull(fr.r, p); err != nil {
		return Frame{}, noEOF(err)
	}
	return Frame{Type: t, Flags: flags, Channel: ch, Payload: p}, nil
}

// noEOF turns io.EOF inside a frame into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// FrameWriter writes frames to a byte stream. It starts no goroutines and
// does not buffer: each WriteFrame makes at most two Writes (header, then
// payload); put a bufio.Writer underneath to batch. Its first error is
// sticky. It is not safe for concurrent use.
type FrameWriter struct {
	w       io.Writer
	maxData int
	hdr     [FrameHeaderLen]byte
	err     error
}

// NewFrameWriter returns a writer that refuses DATA payloads over maxData
// bytes (clamped to MinMaxPayload..MaxMaxPayload); use the peer's limit.
func NewFrameWriter(w io.Writer, maxData int) *FrameWriter {
	return &FrameWriter{w: w, maxData: clamp(maxData, MinMaxPayload, MaxMaxPayload)}
}

// WriteFrame validates f as a FrameReader would and writes it. An invalid
// frame is refused without writing anything and does not make the error
// sticky; a failed write does.
func (fw *FrameWriter) WriteFrame(f Frame) error {
	if fw.err != nil {
		return fw.err
	}
	if uint64(len(f.Payload)) > uint64(^uint32(0)) {
		return fmt.Errorf("%w: payload of %d bytes", ErrProtocol, len(f.Payload))
	}
	n := uint32(len(f.Payload))
	if err := checkFrame(f.Type, f.Flags, 0, f.Channel, n, fw.maxData); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	putHeader(fw.hdr[:], f.Type, f.Flags, f.Channel, n)
	if _, err := fw.w.Write(fw.hdr[:]); err != nil {
		fw.err = err
		return err
	}
	if n > 0 {
		if _, err := fw.w.Write(f.Payload); err != nil {
			fw.err = err
			return err
		}
	}
	return nil
}

// Err returns the sticky write error, if any.
func (fw *FrameWriter) Err() error { return fw.err }

func putHeader(b []byte, t FrameType, flags Flags, ch, n uint32) {
	b[0] = byte(t)
	b[1] = byte(flags)
	b[2], b[3] = 0, 0
	binary.BigEndian.PutUint32(b[4:8], ch)
	binary.BigEndian.PutUint32(b[8:12], n)
}

// AppendFrame appends the encoding of f to b without validating it; tests and
// fuzz seeds use it to build streams.
func AppendFrame(b []byte, f Frame) []byte {
	var h [FrameHeaderLen]byte
	putHeader(h[:], f.Type, f.Flags, f.Channel, uint32(len(f.Payload)))
	b = append(b, h[:]...)
	return append(b, f.Payload...)
}

// codePayload encodes a RESET or GOAWAY payload: code, then the reason cut
// to MaxReasonLen bytes.
func codePayload(code uint32, reason string) []byte {
	if len(reason) > MaxReasonLen {
		reason = reason[:MaxReasonLen]
	}
	p := make([]byte, codeLen, codeLen+len(reason))
	binary.BigEndian.PutUint32(p, code)
	return append(p, reason...)
}

// parseCode decodes a RESET or GOAWAY payload already length-checked by
// FrameReader.
func parseCode(p []byte) (uint32, string) {
	return binary.BigEndian.Uint32(p), string(p[codeLen:])
}

func clamp(v, lo, hi int) int {
	return min(max(v, lo), hi)
}
