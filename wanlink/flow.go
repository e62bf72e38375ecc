package wanlink

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// block is a buffer a flow reads into. A flow fills its blocks in order
// and frees them in order as their bytes are acknowledged, so its memory is
// its in-flight bytes plus at most one partly filled block at each end.
type block struct {
	data  [blockSize]byte
	w     int // bytes filled
	freed int // bytes acknowledged
}

var blocks = sync.Pool{New: func() any { return new(block) }}

func getBlock() *block {
	b := blocks.Get().(*block)
	b.w, b.freed = 0, 0
	return b
}

// chunk is a run of bytes of one flow that crosses the link as a unit, or
// the flow's EOF.
type chunk struct {
	blk     *block
	off, n  int
	eof     bool
	arrived time.Time // when its last byte was read
	// at is when the chunk is delivered while it waits in flight, and
	// when it is acknowledged while it waits in unacked.
	at time.Time
}

func (c chunk) bytes() []byte { return c.blk.data[c.off : c.off+c.n] }

// flow is one direction of one relay: src's bytes on their way to dst.
// Its reader goroutine reads src into blocks while the window allows and
// queues chunks; the wire moves them from pending to flight, stamped with
// their delivery time; its writer goroutine writes each to dst at that
// time, keeps it in unacked for RTT/2 more, then frees its window space.
type flow struct {
	d        *direction
	r        *relay
	src, dst net.Conn

	readerWake chan struct{} // window space was freed
	writerWake chan struct{} // a chunk entered flight

	// Guarded by d.mu.
	pending fifo[chunk] // waiting for the wire
	flight  fifo[chunk] // serialized, waiting for their delivery time
	unacked fifo[chunk] // delivered, waiting for their acknowledgement
	blocks  fifo[*block]
	used    int64     // window bytes held: pending, flight and unacked
	chunks  int       // chunks held: pending, flight and unacked
	lastAt  time.Time // latest delivery time given, so bytes never reorder
	active  bool      // in d.active
	deficit int
}

func (d *direction) newFlow(r *relay, src, dst net.Conn) *flow {
	return &flow{
		d:          d,
		r:          r,
		src:        src,
		dst:        dst,
		readerWake: make(chan struct{}, 1),
		writerWake: make(chan struct{}, 1),
	}
}

// read is the reader goroutine. It exits at src's EOF (after queuing it),
// at a read error (which stops the relay), or when the relay stops.
func (f *flow) read() {
	d, l := f.d, f.d.l
	// Wait for this much window space before reading again, so a
	// backlogged flow reads in chunks rather than in slivers.
	low := min(int64(l.chunk), l.window/4)
	// Bound the chunks held too, so that a sender of tiny writes cannot
	// make the queues hold one chunk per byte; its bytes wait in the
	// socket and are read together.
	maxChunks := max(64, int(l.window/512))
	var tail *block // the block being filled; dropped once full
	for {
		d.mu.Lock()
		free, used, chunks := l.window-f.used, f.used, f.chunks
		d.mu.Unlock()
		if free <= 0 || (free < low && used > 0) || chunks >= maxChunks {
			select {
			case <-f.readerWake:
				continue
			case <-f.r.done:
				return
			}
		}
		if tail == nil {
			tail = getBlock()
			d.mu.Lock()
			f.blocks.push(tail)
			d.mu.Unlock()
		}
		n, err := f.src.Read(tail.data[tail.w : tail.w+int(min(free, int64(blockSize-tail.w)))])
		if n > 0 {
			d.mu.Lock()
			f.commitLocked(tail, n, time.Now())
			d.mu.Unlock()
			if tail.w == blockSize {
				tail = nil
			}
		}
		if errors.Is(err, io.EOF) {
			d.mu.Lock()
			f.queueLocked(chunk{eof: true, arrived: time.Now()})
			d.mu.Unlock()
			return
		}
		if err != nil {
			f.r.stop(fmt.Errorf("wanlink: %s: read: %w", d.name, err))
			return
		}
	}
}

// commitLocked queues n bytes just read at the end of tail, appending to
// the last queued chunk when they follow it in the same block.
func (f *flow) commitLocked(tail *block, n int, now time.Time) {
	d := f.d
	off := tail.w
	tail.w += n
	f.used += int64(n)
	d.accepted.Add(int64(n))
	if d.l.cfg.Bandwidth > 0 {
		if last := f.pending.back(); last != nil && !last.eof && last.blk == tail &&
			last.off+last.n == off && last.n < d.l.chunk {
			k := min(n, d.l.chunk-last.n)
			last.n += k
			last.arrived = now
			d.queued.Add(int64(k))
			off, n = off+k, n-k
		}
	}
	for n > 0 {
		k := min(n, d.l.chunk)
		f.queueLocked(chunk{blk: tail, off: off, n: k, arrived: now})
		off, n = off+k, n-k
	}
}

// queueLocked gives a chunk to the wire, or straight to the delay line on
// an unlimited link.
func (f *flow) queueLocked(c chunk) {
	d := f.d
	if !c.eof {
		f.chunks++
	}
	if d.l.cfg.Bandwidth == 0 {
		f.launchLocked(c, c.arrived)
		return
	}
	d.queued.Add(int64(c.n))
	f.pending.push(c)
	d.activateLocked(f)
}

// launchLocked puts a chunk that left the wire at sent on the delay line.
func (f *flow) launchLocked(c chunk, sent time.Time) {
	d, l := f.d, f.d.l
	at := sent.Add(l.owd)
	if l.cfg.Jitter > 0 {
		at = at.Add(time.Duration(d.rng.Int64N(int64(l.cfg.Jitter) + 1)))
	}
	if at.Before(f.lastAt) {
		at = f.lastAt
	}
	f.lastAt = at
	c.at = at
	d.inflight.Add(int64(c.n))
	f.flight.push(c)
	wake(f.writerWake)
}

// write is the writer goroutine: it delivers chunks to dst at their time
// and acknowledges them RTT/2 later. It exits after delivering the EOF
// (half-closing dst), at a write error (which stops the relay), or when
// the relay stops.
func (f *flow) write() {
	d, l := f.d, f.d.l
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		now := time.Now()
		d.mu.Lock()
		f.ackLocked(now)
		var c chunk
		var next time.Time // when something is due, if nothing is now
		ready := false
		if h := f.flight.front(); h != nil {
			if h.at.After(now) {
				next = h.at
			} else {
				c, ready = *h, true
			}
		}
		if u := f.unacked.front(); u != nil && !ready && (next.IsZero() || u.at.Before(next)) {
			next = u.at
		}
		d.mu.Unlock()

		if !ready {
			var due <-chan time.Time
			if !next.IsZero() {
				timer.Reset(next.Sub(now))
				due = timer.C
			}
			select {
			case <-due:
			case <-f.writerWake:
			case <-f.r.done:
				return
			}
			continue
		}
		if c.eof {
			d.mu.Lock()
			f.flight.pop()
			f.ackLocked(time.Now().Add(l.owd)) // nothing more will be read
			d.mu.Unlock()
			f.closeWrite()
			return
		}
		if _, err := f.dst.Write(c.bytes()); err != nil {
			f.r.stop(fmt.Errorf("wanlink: %s: write: %w", d.name, err))
			return
		}
		d.bytes.Add(int64(c.n))
		delivered := time.Now()
		d.mu.Lock()
		f.flight.pop()
		c.at = delivered.Add(l.owd)
		f.unacked.push(c)
		d.mu.Unlock()
	}
}

// ackLocked frees the window space of the chunks acknowledged by now.
func (f *flow) ackLocked(now time.Time) {
	freed := false
	for u := f.unacked.front(); u != nil && !u.at.After(now); u = f.unacked.front() {
		c := f.unacked.pop()
		f.used -= int64(c.n)
		f.chunks--
		f.d.inflight.Add(int64(-c.n))
		c.blk.freed += c.n
		if c.blk.freed == blockSize {
			blocks.Put(f.blocks.pop())
		}
		freed = true
	}
	if freed {
		wake(f.readerWake)
	}
}

// closeWrite passes the EOF on to dst. A dst that cannot half-close ends
// the relay instead.
func (f *flow) closeWrite() {
	cw, ok := f.dst.(interface{ CloseWrite() error })
	if !ok {
		f.r.stop(nil)
		return
	}
	if err := cw.CloseWrite(); err != nil {
		f.r.stop(fmt.Errorf("wanlink: %s: close write: %w", f.d.name, err))
	}
}

// release drops what the flow still holds once its goroutines have exited.
func (f *flow) release() {
	d := f.d
	d.mu.Lock()
	defer d.mu.Unlock()
	d.deactivateLocked(f)
	for f.pending.len() > 0 {
		d.queued.Add(int64(-f.pending.pop().n))
	}
	for f.flight.len() > 0 {
		d.inflight.Add(int64(-f.flight.pop().n))
	}
	for f.unacked.len() > 0 {
		d.inflight.Add(int64(-f.unacked.pop().n))
	}
	for f.blocks.len() > 0 {
		blocks.Put(f.blocks.pop())
	}
	f.used, f.chunks = 0, 0
}
