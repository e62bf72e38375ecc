package wanlink

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Sizes and times of the emulation; doc.go says what they cost in accuracy.
const (
	// blockSize is the unit of the buffers a connection direction reads
	// into; a chunk never spans two blocks.
	blockSize = 64 << 10
	// chunkTime is the serialization time a chunk aims at: the grain of
	// the scheduler and of fairness.
	chunkTime = time.Millisecond
	// minChunk and maxChunk bound the bytes of one chunk.
	minChunk = 1500
	maxChunk = 64 << 10
	// maxLag is how far the wire's clock may trail real time when the
	// emulator itself was late (timer slack, a busy CPU) and catches up.
	maxLag = 10 * time.Millisecond
)

// ErrClosed is returned by Relay on a Link that has been closed, and by
// relays that Close ended.
var ErrClosed = errors.New("wanlink: link closed")

// Link is one emulated WAN link with two directions, Forward and Reverse,
// shared by every connection relayed through it. Its methods are safe for
// concurrent use.
type Link struct {
	cfg    Config
	window int64         // in-flight bound of one connection direction
	owd    time.Duration // one-way delay, RTT/2
	chunk  int           // largest chunk, also the fair-queuing quantum
	log    *zap.Logger

	fwd, rev *direction
	conns    atomic.Int64

	ctx    context.Context // ends at Close
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup // relays and the two wire goroutines
}

// New returns a link emulating cfg. With a bandwidth limit it starts one
// goroutine per direction, the wire, which runs until Close. log may be
// nil; only Serve logs.
func New(cfg Config, log *zap.Logger) (*Link, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	l := &Link{
		cfg:    cfg,
		window: cfg.window(),
		owd:    cfg.RTT / 2,
		chunk:  maxChunk,
		log:    log,
	}
	if cfg.Bandwidth > 0 {
		l.chunk = int(min(max(int64(float64(cfg.Bandwidth)/8*chunkTime.Seconds()), minChunk), maxChunk))
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.fwd = newDirection(l, "forward", uint64(cfg.Seed), 1)
	l.rev = newDirection(l, "reverse", uint64(cfg.Seed), 2)
	if cfg.Bandwidth > 0 {
		l.wg.Go(l.fwd.run)
		l.wg.Go(l.rev.run)
	}
	return l, nil
}

// Config returns the configuration the link emulates.
func (l *Link) Config() Config { return l.cfg }

// Window returns the in-flight bound of each connection direction in
// bytes: Config.Window or its default.
func (l *Link) Window() int64 { return l.window }

// Stats is a snapshot of a link's counters.
type Stats struct {
	Forward, Reverse Dir
	// Conns counts the connections being relayed now.
	Conns int64
}

// Dir holds the counters of one direction. Bytes and Accepted count since
// New; Queued and InFlight are levels now.
type Dir struct {
	// Bytes were delivered to the receiving side.
	Bytes int64
	// Accepted bytes were read from the sending side.
	Accepted int64
	// Queued bytes wait for the wire (the link's queue).
	Queued int64
	// InFlight bytes were given to the wire and are not yet acknowledged:
	// they are being serialized, travel, or were delivered less than RTT/2
	// ago. At full rate this is one bandwidth-delay product plus the chunk
	// on the wire.
	InFlight int64
}

// Stats reads the counters; it can be called at any time.
func (l *Link) Stats() Stats {
	return Stats{Forward: l.fwd.stats(), Reverse: l.rev.stats(), Conns: l.conns.Load()}
}

// Close ends every relay (they return ErrClosed and close their conns)
// and the wire goroutines, and waits for them. It returns nil.
func (l *Link) Close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.cancel()
	l.wg.Wait()
	return nil
}

// relay is the state shared by the four goroutines of one Relay.
type relay struct {
	a, b net.Conn
	done chan struct{} // closed by stop
	once sync.Once
	err  error // set once, before done closes
}

// stop ends the relay: it records err (nil for a normal end), wakes every
// goroutine and closes both conns, which unblocks their reads and writes.
func (r *relay) stop(err error) {
	r.once.Do(func() {
		r.err = err
		close(r.done)
		r.a.Close()
		r.b.Close()
	})
}

// Relay moves bytes between a and b through the link, a to b on Forward
// and b to a on Reverse, until both directions have ended, and closes a
// and b before it returns. A direction ends when its sender's EOF has
// crossed the link: the receiver then gets CloseWrite, after every byte
// sent before it. If the receiver cannot half-close (it has no CloseWrite
// method), that EOF ends the whole relay. A read or write error on either
// side, ctx ending, or Close ends the relay at once and is returned; a
// relay that ended by EOF both ways returns nil.
//
// Relay runs four goroutines (a reader and a writer per direction) and
// returns when all have exited.
func (l *Link) Relay(ctx context.Context, a, b net.Conn) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		a.Close()
		b.Close()
		return ErrClosed
	}
	l.wg.Add(1)
	l.mu.Unlock()
	defer l.wg.Done()
	l.conns.Add(1)
	defer l.conns.Add(-1)

	r := &relay{a: a, b: b, done: make(chan struct{})}
	fwd := l.fwd.newFlow(r, a, b)
	rev := l.rev.newFlow(r, b, a)
	stopCtx := context.AfterFunc(ctx, func() { r.stop(fmt.Errorf("wanlink: relay: %w", context.Cause(ctx))) })
	stopLink := context.AfterFunc(l.ctx, func() { r.stop(ErrClosed) })

	var wg sync.WaitGroup
	for _, f := range []*flow{fwd, rev} {
		wg.Go(f.read)
		wg.Go(f.write)
	}
	wg.Wait()
	stopCtx()
	stopLink()
	r.stop(nil)
	fwd.release()
	rev.release()
	return r.err
}
