package blockcodec_test

import (
	"bytes"
	"errors"
	"io"
	"sync"
)

// pipe is a buffered in-memory pipe: writes return once their bytes are
// buffered (up to limit bytes held; more blocks the writer), unlike
// io.Pipe and net.Pipe, which hand each write to a read and so hide a
// proxy that only works while its peer keeps reading.
type pipe struct {
	mu     sync.Mutex
	cond   *sync.Cond
	buf    bytes.Buffer
	limit  int
	closed bool  // write side closed: reads drain, then io.EOF
	err    error // read side failed: writes fail
}

func newPipe(limit int) *pipe {
	p := &pipe{limit: limit}
	p.cond = sync.NewCond(&p.mu)
	return p
}

func (p *pipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for len(b) > 0 {
		for p.buf.Len() >= p.limit && p.err == nil {
			p.cond.Wait()
		}
		if p.err != nil {
			return n, p.err
		}
		if p.closed {
			return n, errors.New("pipe: write after close")
		}
		k := min(len(b), p.limit-p.buf.Len())
		p.buf.Write(b[:k])
		b = b[k:]
		n += k
		p.cond.Broadcast()
	}
	return n, nil
}

func (p *pipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.buf.Len() == 0 && !p.closed && p.err == nil {
		p.cond.Wait()
	}
	if p.buf.Len() > 0 {
		n, _ := p.buf.Read(b)
		p.cond.Broadcast()
		return n, nil
	}
	if p.err != nil {
		return 0, p.err
	}
	return 0, io.EOF
}

// CloseWrite ends the stream after the bytes written.
func (p *pipe) CloseWrite() {
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	p.mu.Unlock()
}

// Fail makes reads and writes fail with err.
func (p *pipe) Fail(err error) {
	p.mu.Lock()
	p.err = err
	p.cond.Broadcast()
	p.mu.Unlock()
}
