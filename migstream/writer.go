package migstream

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Writer writes records as QEMU does. Give it a buffered writer: it writes
// each record's header and its page separately.
type Writer struct {
	w   io.Writer
	buf []byte
	err error
}

// NewWriter writes to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w, buf: make([]byte, 0, 512)} }

// Err is the first write error, which every later call returns too.
func (w *Writer) Err() error { return w.err }

// WriteRecord writes r.
func (w *Writer) WriteRecord(r *Record) error {
	if w.err != nil {
		return w.err
	}
	switch r.Kind {
	case KindRaw:
		return w.write(r.Data)
	case KindPage:
		if len(r.Data) != PageSize {
			w.err = fmt.Errorf("migstream: page record of %d bytes", len(r.Data))
			return w.err
		}
		w.buf = binary.BigEndian.AppendUint64(w.buf[:0], r.Addr|uint64(r.Flags))
		w.buf = AppendBlockName(w.buf, r)
		if w.write(w.buf) != nil {
			return w.err
		}
		return w.write(r.Data)
	}
	w.buf = AppendRecord(w.buf[:0], r)
	return w.write(w.buf)
}

// WritePage writes a PAGE record: page number, CONTINUE or the block's
// name, and the page's bytes.
func (w *Writer) WritePage(page uint64, cont bool, block string, data []byte) error {
	if w.err != nil {
		return w.err
	}
	if len(data) != PageSize {
		w.err = fmt.Errorf("migstream: page record of %d bytes", len(data))
		return w.err
	}
	w.buf = AppendPageHeader(w.buf[:0], page, cont, block)
	if w.write(w.buf) != nil {
		return w.err
	}
	return w.write(data)
}

// Write writes bytes as they are (the Raw part of a stream).
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.write(p) != nil {
		return 0, w.err
	}
	return len(p), nil
}

func (w *Writer) write(p []byte) error {
	if _, err := w.w.Write(p); err != nil {
		w.err = err
	}
	return w.err
}
