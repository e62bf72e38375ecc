// Package iocount counts the bytes that pass through a reader or a writer:
// the codecs' decoders use it to say at which byte of their input a stream
// broke and how much they wrote.
package iocount

import "io"

// Reader counts the bytes its reader gave.
type Reader struct {
	R io.Reader
	N int64
}

func (c *Reader) Read(p []byte) (int, error) {
	n, err := c.R.Read(p)
	c.N += int64(n)
	return n, err
}

// Writer counts the bytes its writer took.
type Writer struct {
	W io.Writer
	N int64
}

func (c *Writer) Write(p []byte) (int, error) {
	n, err := c.W.Write(p)
	c.N += int64(n)
	return n, err
}
