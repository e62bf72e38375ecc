package pagecodec

import (
	"errors"
	"io"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmigrate/vmigrate/migstream"
)

// Name is the codec's name on a tunnel channel.
const Name = "vmpc1"

// PageSize is the page the codec works on (x86's target page).
const PageSize = migstream.PageSize

// Cache sizing, when Config.CacheBytes is 0: the guest's RAM up to
// DefaultCacheFull, a quarter of it beyond (but not less than
// DefaultCacheFull), within DefaultCacheMin and DefaultCacheMax. Only
// pages sent with contents take room; the cache must hold the pages the
// guest keeps rewriting for deltas to work.
const (
	DefaultCacheMin  = 64 << 20
	DefaultCacheFull = 2 << 30
	DefaultCacheMax  = 8 << 30
	// DefaultMaxCache is the largest cache a decoder agrees to keep.
	DefaultMaxCache = 16 << 30
)

// Config sets the codec up.
type Config struct {
	// CacheBytes is the page cache each end keeps, per stream; 0 sizes it
	// from the guest's RAM (see DefaultCacheFull).
	CacheBytes int64
	// MaxCacheBytes bounds the cache an encoder may ask a decoder for
	// (0 means DefaultMaxCache).
	MaxCacheBytes int64
}

func (c Config) cacheSlots(guest uint64) int32 {
	b := c.CacheBytes
	if b <= 0 {
		g := int64(min(guest, 1<<62))
		b = min(max(g/4, min(g, DefaultCacheFull), DefaultCacheMin), DefaultCacheMax)
	}
	return int32(min(max(b/pageSize, 1), 1<<31-1))
}

func (c Config) maxSlots() int64 {
	if c.MaxCacheBytes > 0 {
		return max(c.MaxCacheBytes/pageSize, 1)
	}
	return DefaultMaxCache / pageSize
}

// Codec encodes streams on the source end of a tunnel and decodes them on
// the dest end; one Codec serves any number of streams, in either role,
// and adds up their statistics.
type Codec struct {
	cfg Config

	mu   sync.Mutex
	done Stats              // streams that ended
	live map[*encoder]Stats // streams running, as of their last flush
	dcpu time.Duration
}

// New returns a codec.
func New(cfg Config) *Codec { return &Codec{cfg: cfg, live: make(map[*encoder]Stats)} }

// Name is the codec's name on a tunnel channel.
func (c *Codec) Name() string { return Name }

// Stats adds up every stream encoded so far, including running ones.
func (c *Codec) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.done
	for _, l := range c.live {
		s.add(l)
	}
	s.DecodeCPU = c.dcpu
	s.finish()
	return s
}

// Encode reads a QEMU migration stream from src until it ends and writes
// the encoded stream to dst. An error wrapping a write to dst is an
// IsWriteError.
func (c *Codec) Encode(dst io.Writer, src io.Reader) error {
	e := newEncoder(dst, c.cfg)
	e.onFlush = func(s Stats) {
		c.mu.Lock()
		c.live[e] = s
		c.mu.Unlock()
	}
	var err error
	cpu := threadCPU(func() { err = e.encode(src) })
	e.stats.CPU = cpu
	e.stats.Streams = 1
	c.mu.Lock()
	delete(c.live, e)
	c.done.add(e.stats)
	c.mu.Unlock()
	return err
}

// Decode reads an encoded stream from src until it ends and writes the
// QEMU stream to dst. A stream that breaks the format is a *CorruptError.
func (c *Codec) Decode(dst io.Writer, src io.Reader) error {
	d := newDecoder(dst, src, c.cfg.maxSlots())
	var err error
	cpu := threadCPU(func() { err = d.decode() })
	c.mu.Lock()
	c.dcpu += cpu
	c.mu.Unlock()
	return err
}

// IsWriteError reports whether err came from writing the output, not from
// the input or the codec.
func IsWriteError(err error) bool {
	var w *writeError
	return errors.As(err, &w)
}

// threadCPU runs f on a thread of its own and returns the CPU time the
// thread spent (user and system), which is the codec's cost including its
// reads and writes.
func threadCPU(f func()) time.Duration {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var a, b unix.Timespec
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &a)
	f()
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &b)
	return time.Duration(b.Nano() - a.Nano())
}
