package blockcodec

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/vmigrate/vmigrate/tunnel"
)

// Name is the codec's name on a tunnel channel ("disk:vda+nbd1").
const Name = "nbd1"

// Block sizes: Config.BlockSize is a power of two in this range.
const (
	DefaultBlockSize = 64 << 10
	MinBlockSize     = 4 << 10
	MaxBlockSize     = 1 << 20
)

// Neighbours is the destination's block index as the codec's dest end
// uses it.
type Neighbours interface {
	// BlockSize is the reference unit, a power of two from 512 to 1 MiB.
	BlockSize() int
	// Keys are the sorted, unique keys (the first 8 bytes of BLAKE3-256,
	// little endian) of the blocks it holds.
	Keys() []uint64
	// Read fills buf (BlockSize bytes) with the block whose BLAKE3-256 is
	// fp, which it must verify, or fails.
	Read(fp [32]byte, buf []byte) error
}

// Config sets the codec up.
type Config struct {
	// BlockSize is the most bytes of data compressed as one group (0:
	// DefaultBlockSize), and the reference unit when the dest end has no
	// index.
	BlockSize int
	// Deflate also tries DEFLATE on each group and keeps it when it beats
	// LZ4: fewer bytes on text, at several times LZ4's CPU.
	Deflate bool
	// Index, on a dest end, is the blocks the destination holds already;
	// nil for none. A source end ignores it.
	Index Neighbours
	// Log receives the codec's warnings (default: none).
	Log *zap.Logger
}

// Codec encodes NBD client streams at the source end of a tunnel and
// decodes them at the dest end; one Codec serves any number of channels,
// in either role, and adds up their statistics.
type Codec struct {
	cfg Config
	log *zap.Logger

	mu   sync.Mutex
	done Stats              // channels that ended
	live map[*encoder]Stats // encoders running, as of their last flush
	dec  map[*decoder]Stats // decoders running
}

// New checks cfg and returns a codec.
func New(cfg Config) (*Codec, error) {
	if cfg.BlockSize == 0 {
		cfg.BlockSize = DefaultBlockSize
	}
	if cfg.BlockSize < MinBlockSize || cfg.BlockSize > MaxBlockSize || cfg.BlockSize&(cfg.BlockSize-1) != 0 {
		return nil, fmt.Errorf("blockcodec: block size %d, want a power of two from %d to %d", cfg.BlockSize, MinBlockSize, MaxBlockSize)
	}
	if cfg.Index != nil {
		if u := cfg.Index.BlockSize(); !validUnit(u) {
			return nil, fmt.Errorf("blockcodec: index block size %d, want a power of two from %d to %d", u, MinUnit, MaxUnit)
		}
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	return &Codec{cfg: cfg, log: cfg.Log, live: make(map[*encoder]Stats), dec: make(map[*decoder]Stats)}, nil
}

// Name is the codec's name on a tunnel channel.
func (c *Codec) Name() string { return Name }

// Config is the codec's configuration, defaults filled in.
func (c *Codec) Config() Config { return c.cfg }

// Stats adds up every channel so far, running ones included.
func (c *Codec) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.done
	for _, l := range c.live {
		s.add(l)
	}
	for _, l := range c.dec {
		s.add(l)
	}
	s.finish()
	return s
}

// Encode reads an NBD client stream from src until it ends and writes the
// encoded stream to dst, as a source end whose dest end announced ann
// (nil: no index). A failed write to dst is an error wrapping it.
func (c *Codec) encode(dst io.Writer, src io.Reader, ann <-chan annResult) error {
	e := newEncoder(dst, c.cfg)
	e.annWait = ann
	e.onFlush = func(s Stats) {
		c.mu.Lock()
		c.live[e] = s
		c.mu.Unlock()
	}
	var err error
	threadCPU(func(cpu func() time.Duration) {
		e.cpu = cpu
		err = e.encode(src)
	})
	e.stats.Channels = 1
	c.mu.Lock()
	delete(c.live, e)
	c.done.add(e.stats)
	c.mu.Unlock()
	if err != nil {
		c.log.Debug("blockcodec: encoder ended", zap.Error(err))
	}
	return err
}

// Encode encodes an NBD client stream for a dest end without an index.
func (c *Codec) Encode(dst io.Writer, src io.Reader) error { return c.encode(dst, src, nil) }

// Decode reads an encoded stream from src until it ends and writes the
// NBD client stream to dst, resolving references with the codec's Index.
// A stream that breaks the format is a *CorruptError.
func (c *Codec) Decode(dst io.Writer, src io.Reader) error {
	d := newDecoder(dst, src, c.cfg.Index)
	d.onFlush = func(s Stats) {
		c.mu.Lock()
		c.dec[d] = s
		c.mu.Unlock()
	}
	var err error
	threadCPU(func(cpu func() time.Duration) {
		d.cpu = cpu
		err = d.decode()
	})
	c.mu.Lock()
	delete(c.dec, d)
	c.done.add(d.stats)
	c.mu.Unlock()
	return err
}

// annResult is what a source end's ToLocal learned, for its ToPeer.
type annResult struct {
	a   *announcement
	err error
}

// SourceEnd starts the source end of one channel: it encodes the NBD
// client's requests towards the peer, and strips the dest end's
// announcement off the server's replies before passing them on.
func (c *Codec) SourceEnd() tunnel.CodecEnd {
	return &sourceEnd{c: c, ann: make(chan annResult, 1)}
}

type sourceEnd struct {
	c   *Codec
	ann chan annResult // one result, sent by ToLocal
}

func (s *sourceEnd) ToPeer(dst io.Writer, src io.Reader) error { return s.c.encode(dst, src, s.ann) }

func (s *sourceEnd) ToLocal(dst io.Writer, src io.Reader) error {
	a, br, err := announceReader(src)
	s.ann <- annResult{a, err}
	if err != nil {
		return err
	}
	if a.unit != 0 {
		s.c.log.Debug("blockcodec: dest end announced its index", zap.Int("unit", a.unit), zap.Int("keys", a.keys.len()))
	}
	_, err = io.Copy(dst, br)
	return err
}

// DestEnd starts the dest end of one channel: it announces the index's
// keys, passes the server's replies on, and decodes the stream towards
// the NBD server.
func (c *Codec) DestEnd() tunnel.CodecEnd { return &destEnd{c: c} }

type destEnd struct{ c *Codec }

func (d *destEnd) ToPeer(dst io.Writer, src io.Reader) error {
	var b []byte
	if ix := d.c.cfg.Index; ix != nil {
		b = appendAnnouncement(nil, ix.BlockSize(), ix.Keys())
	} else {
		b = appendAnnouncement(nil, 0, nil)
	}
	if _, err := dst.Write(b); err != nil {
		return err
	}
	_, err := io.Copy(dst, src)
	return err
}

func (d *destEnd) ToLocal(dst io.Writer, src io.Reader) error { return d.c.Decode(dst, src) }

// IsCorrupt reports whether err is (or wraps) a *CorruptError: an encoded
// stream the dest end refused.
func IsCorrupt(err error) bool {
	var ce *CorruptError
	return errors.As(err, &ce)
}

// threadCPU runs f on a thread of its own, giving it a clock of the CPU
// time the thread has spent since it started (user and system).
func threadCPU(f func(cpu func() time.Duration)) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	now := func() time.Duration {
		var t unix.Timespec
		unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &t)
		return time.Duration(t.Nano())
	}
	start := now()
	f(func() time.Duration { return now() - start })
}
