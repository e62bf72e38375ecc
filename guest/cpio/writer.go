// Package cpio writes the "newc" (SVR4, no CRC) cpio archives the Linux
// kernel unpacks as an initramfs.
//
// It exists so the guest image can be assembled from files held in memory,
// with device nodes and fixed owners, without root and without running the
// system cpio: the output depends only on the headers and bytes given, so the
// same inputs produce the same archive byte for byte.
//
// Format (Documentation/driver-api/early-userspace/buffer-format.rst): each
// entry is a 110-byte ASCII header — the magic "070701" and thirteen 8-digit
// hex fields — followed by the NUL-terminated name, padding to a multiple of
// 4, the data, and padding to a multiple of 4. The archive ends with an entry
// named "TRAILER!!!".
package cpio

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// Mode type bits (the S_IF* values of the file mode field).
const (
	TypeMask    = 0o170000
	TypeDir     = 0o040000
	TypeReg     = 0o100000
	TypeSymlink = 0o120000
	TypeChar    = 0o020000
	TypeBlock   = 0o060000
)

const (
	magic       = "070701"
	headerLen   = 110
	trailerName = "TRAILER!!!"
	// MaxNameLen bounds a name; the kernel refuses longer ones (PATH_MAX).
	MaxNameLen = 4096
)

// Header describes one archive entry. Mode holds both the type bits (Type*)
// and the permission bits. For a symlink the data is the link target.
type Header struct {
	Name                 string
	Mode                 uint32
	UID, GID             uint32
	NLink                uint32 // 0 means 1 (2 for directories)
	MTime                uint32 // seconds since the epoch; 0 for reproducible archives
	Size                 int64
	DevMajor, DevMinor   uint32 // device holding the file; 0 is fine
	RDevMajor, RDevMinor uint32 // for TypeChar and TypeBlock
}

// ErrWriteTooLong is returned when more data is written than Header.Size.
var ErrWriteTooLong = errors.New("cpio: write too long")

// Writer writes a newc archive. Inode numbers are assigned sequentially from
// 1. Its first error is sticky: every later call returns it.
type Writer struct {
	w       io.Writer
	err     error
	ino     uint32
	remain  int64 // data bytes the current entry still expects
	pad     int   // padding owed after the current entry's data
	closed  bool
	scratch [headerLen]byte
}

// NewWriter returns a Writer that writes to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// WriteHeader finishes the previous entry and starts a new one; the entry's
// Size bytes of data follow through Write.
func (w *Writer) WriteHeader(h *Header) error {
	if err := w.finishEntry(); err != nil {
		return err
	}
	if h.Name == trailerName {
		return w.fail(fmt.Errorf("cpio: write header: name %q is reserved", h.Name))
	}
	return w.writeHeader(h)
}

func (w *Writer) writeHeader(h *Header) error {
	name := strings.TrimPrefix(h.Name, "/")
	switch {
	case name == "" && h.Name != "":
		return w.fail(fmt.Errorf("cpio: write header: name %q has no path", h.Name))
	case name == "":
		return w.fail(errors.New("cpio: write header: empty name"))
	case len(name) >= MaxNameLen:
		return w.fail(fmt.Errorf("cpio: write header %.40s...: name longer than %d bytes", name, MaxNameLen-1))
	case strings.IndexByte(name, 0) >= 0:
		return w.fail(fmt.Errorf("cpio: write header %q: NUL in name", name))
	case h.Size < 0 || h.Size > 0xffffffff:
		return w.fail(fmt.Errorf("cpio: write header %s: size %d out of range", name, h.Size))
	case h.Mode&TypeMask == 0 && name != trailerName:
		return w.fail(fmt.Errorf("cpio: write header %s: mode %#o has no file type", name, h.Mode))
	case h.Mode&TypeMask == TypeDir && h.Size != 0:
		return w.fail(fmt.Errorf("cpio: write header %s: directory with data", name))
	}
	nlink := h.NLink
	if nlink == 0 {
		nlink = 1
		if h.Mode&TypeMask == TypeDir {
			nlink = 2
		}
	}
	ino := uint32(0)
	if name != trailerName {
		w.ino++
		ino = w.ino
	}
	b := w.scratch[:]
	copy(b, magic)
	for i, v := range [13]uint32{
		ino, h.Mode, h.UID, h.GID, nlink, h.MTime, uint32(h.Size),
		h.DevMajor, h.DevMinor, h.RDevMajor, h.RDevMinor,
		uint32(len(name) + 1), 0, // name size includes the NUL; check is 0 for newc
	} {
		putHex8(b[6+8*i:], v)
	}
	if _, err := w.w.Write(b); err != nil {
		return w.fail(fmt.Errorf("cpio: write header %s: %w", name, err))
	}
	nameAndPad := make([]byte, len(name)+1+pad4(headerLen+len(name)+1))
	copy(nameAndPad, name)
	if _, err := w.w.Write(nameAndPad); err != nil {
		return w.fail(fmt.Errorf("cpio: write header %s: %w", name, err))
	}
	w.remain, w.pad = h.Size, pad4(int(h.Size))
	return nil
}

// Write writes data of the current entry.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.closed {
		return 0, errors.New("cpio: write after close")
	}
	tooLong := int64(len(p)) > w.remain
	if tooLong {
		p = p[:w.remain]
	}
	n, err := w.w.Write(p)
	w.remain -= int64(n)
	if err != nil {
		return n, w.fail(fmt.Errorf("cpio: write data: %w", err))
	}
	if tooLong {
		return n, ErrWriteTooLong
	}
	return n, nil
}

// Close writes the trailer. It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	if err := w.finishEntry(); err != nil {
		return err
	}
	if err := w.writeHeader(&Header{Name: trailerName}); err != nil {
		return err
	}
	w.closed = true
	return nil
}

func (w *Writer) finishEntry() error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return errors.New("cpio: write after close")
	}
	if w.remain > 0 {
		return w.fail(fmt.Errorf("cpio: entry is %d bytes short of its header size", w.remain))
	}
	if w.pad > 0 {
		var zero [3]byte
		if _, err := w.w.Write(zero[:w.pad]); err != nil {
			return w.fail(fmt.Errorf("cpio: write padding: %w", err))
		}
		w.pad = 0
	}
	return nil
}

func (w *Writer) fail(err error) error {
	w.err = err
	return err
}

func pad4(n int) int { return (4 - n%4) % 4 }

func putHex8(b []byte, v uint32) {
	const digits = "0123456789ABCDEF"
	for i := 7; i >= 0; i-- {
		b[i] = digits[v&0xf]
		v >>= 4
	}
}
