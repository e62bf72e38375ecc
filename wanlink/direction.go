package wanlink

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// direction is one way of the link: a wire that serializes the chunks of
// all its flows at the link's rate, taking them from the flows' queues by
// deficit round robin, and hands each to its flow's delay line.
type direction struct {
	l    *Link
	name string
	kick chan struct{} // a flow queued a chunk; capacity 1

	mu       sync.Mutex
	active   []*flow   // flows with queued chunks, in round-robin order
	wireFree time.Time // when the wire finishes what it was given
	rng      *rand.Rand

	bytes, accepted, queued, inflight atomic.Int64
}

func newDirection(l *Link, name string, seed, stream uint64) *direction {
	return &direction{
		l:    l,
		name: name,
		kick: make(chan struct{}, 1),
		rng:  rand.New(rand.NewPCG(seed, stream)),
	}
}

func (d *direction) stats() Dir {
	return Dir{
		Bytes:    d.bytes.Load(),
		Accepted: d.accepted.Load(),
		Queued:   d.queued.Load(),
		InFlight: d.inflight.Load(),
	}
}

// run is the wire: the goroutine of a direction with a bandwidth limit.
// It exits when the link closes.
//
// Each turn it takes one chunk and gives it the wire from
// max(wireFree, arrival), so the wire's clock advances by exactly each
// chunk's serialization time however late this goroutine wakes; it then
// sleeps until the wire is free, so the next choice among flows is made
// when a real wire would make it.
func (d *direction) run() {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		d.mu.Lock()
		wait, sent := d.sendLocked(time.Now())
		d.mu.Unlock()
		switch {
		case !sent:
			select {
			case <-d.kick:
			case <-d.l.ctx.Done():
				return
			}
		case wait > 0:
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-d.l.ctx.Done():
				return
			}
		}
	}
}

// sendLocked serializes the next chunk, if any, and reports how long until
// the wire is free again.
func (d *direction) sendLocked(now time.Time) (time.Duration, bool) {
	f, c, ok := d.pickLocked()
	if !ok {
		return 0, false
	}
	start := d.wireFree
	if c.arrived.After(start) {
		start = c.arrived
	}
	if floor := now.Add(-maxLag); floor.After(start) {
		start = floor
	}
	end := start.Add(d.serialization(c.n))
	d.wireFree = end
	d.queued.Add(int64(-c.n))
	f.launchLocked(c, end)
	return end.Sub(now), true
}

// serialization is how long the wire takes to send n bytes, rounded up.
func (d *direction) serialization(n int) time.Duration {
	bits := int64(n) * 8 * int64(time.Second)
	bw := d.l.cfg.Bandwidth
	return time.Duration((bits + bw - 1) / bw)
}

// pickLocked takes the next chunk by deficit round robin: the flow at the
// head of active sends while its deficit covers its next chunk, then gets
// a quantum (the largest chunk) and goes to the tail. Byte shares of
// backlogged flows are equal within one quantum.
func (d *direction) pickLocked() (*flow, chunk, bool) {
	for len(d.active) > 0 {
		f := d.active[0]
		if c := f.pending.front(); f.deficit >= c.n {
			f.deficit -= c.n
			v := f.pending.pop()
			if f.pending.len() == 0 {
				d.deactivateLocked(f)
			}
			return f, v, true
		}
		f.deficit += d.l.chunk
		copy(d.active, d.active[1:])
		d.active[len(d.active)-1] = f
	}
	return nil, chunk{}, false
}

// activateLocked puts a flow that has just queued a chunk in the round.
func (d *direction) activateLocked(f *flow) {
	if f.active {
		return
	}
	f.active = true
	d.active = append(d.active, f)
	wake(d.kick)
}

func (d *direction) deactivateLocked(f *flow) {
	if !f.active {
		return
	}
	f.active = false
	f.deficit = 0
	for i, g := range d.active {
		if g == f {
			d.active = append(d.active[:i], d.active[i+1:]...)
			return
		}
	}
}

// wake sends a wake-up on a channel of capacity 1 without blocking; one
// pending wake-up is enough since the woken side rechecks its state.
func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
