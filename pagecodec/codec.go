package pagecodec

import (
	"bufio"
	"errors"
	"io"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmigrate/vmigrate/migstream"
	"github.com/vmigrate/vmigrate/tunnel"
)

// Name is the codec's name on a tunnel channel.
const Name = "vmpc3"

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
	// SeedFile, on a dest end, keeps the pages of the last stream it
	// decoded, and offers them to the next stream's encoder (seed.go).
	SeedFile string
	// Effort is how hard the encoder compresses; the zero value follows
	// the link (EffortAuto).
	Effort Effort
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
		return min(max(c.MaxCacheBytes/pageSize, 1), 1<<31-1)
	}
	return DefaultMaxCache / pageSize
}

// Codec encodes streams on the source end of a tunnel and decodes them on
// the dest end; one Codec serves any number of streams, in either role,
// and adds up their statistics.
type Codec struct {
	cfg Config

	mu      sync.Mutex
	done    Stats              // streams that ended
	live    map[*encoder]Stats // streams running, as of their last flush
	dcpu    time.Duration
	seedErr error
	saves   sync.WaitGroup // seed files being written
}

// New returns a codec. An Effort it does not know is EffortAuto.
func New(cfg Config) *Codec {
	if cfg.Effort < EffortAuto || cfg.Effort > EffortMax {
		cfg.Effort = EffortAuto
	}
	return &Codec{cfg: cfg, live: make(map[*encoder]Stats)}
}

// Name is the codec's name on a tunnel channel.
func (c *Codec) Name() string { return Name }

// Config is the codec's configuration.
func (c *Codec) Config() Config { return c.cfg }

// Stats adds up every stream encoded so far, including running ones.
func (c *Codec) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.done
	for _, l := range c.live {
		s.add(l)
	}
	s.DecodeCPU = c.dcpu
	if c.seedErr != nil {
		s.SeedError = c.seedErr.Error()
	}
	s.finish()
	return s
}

// Close waits for seed files being written and returns the last error
// about the seed file.
func (c *Codec) Close() error {
	c.saves.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seedErr
}

// Encode reads a QEMU migration stream from src until it ends and writes
// the encoded stream to dst. An error wrapping a write to dst is an
// IsWriteError.
func (c *Codec) Encode(dst io.Writer, src io.Reader) error { return c.encode(dst, src, nil) }

func (c *Codec) encode(dst io.Writer, src io.Reader, seeds <-chan *seedIndex) error {
	e := newEncoder(dst, c.cfg)
	e.seedWait = seeds
	e.onFlush = func(s Stats) {
		c.mu.Lock()
		c.live[e] = s
		c.mu.Unlock()
	}
	var err error
	cpu := threadCPU(func() { err = e.encode(src) })
	if e.st != nil {
		e.st.release()
	}
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
	d, err := c.decode(dst, src, nil)
	if d.st != nil {
		d.st.release()
	}
	return err
}

func (c *Codec) decode(dst io.Writer, src io.Reader, seeds *seedPages) (*decoder, error) {
	d := newDecoder(dst, src, c.cfg.maxSlots())
	d.seeds = seeds
	var err error
	cpu := threadCPU(func() { err = d.decode() })
	if d.zr != nil {
		d.zr.Close()
	}
	c.mu.Lock()
	c.dcpu += cpu
	c.mu.Unlock()
	return d, err
}

// SourceEnd starts the source end of one tunnel channel: it encodes
// QEMU's stream towards the peer, and reads the dest end's seed
// announcement before passing QEMU's return path on.
func (c *Codec) SourceEnd() tunnel.CodecEnd {
	return &sourceEnd{c: c, seeds: make(chan *seedIndex, 1)}
}

type sourceEnd struct {
	c     *Codec
	seeds chan *seedIndex // one announcement, or nil
}

func (s *sourceEnd) ToPeer(dst io.Writer, src io.Reader) error { return s.c.encode(dst, src, s.seeds) }

func (s *sourceEnd) ToLocal(dst io.Writer, src io.Reader) error {
	br := bufio.NewReader(src)
	idx, err := readAnnouncement(br)
	s.seeds <- idx
	if err != nil {
		return err
	}
	_, err = io.Copy(dst, br)
	return err
}

// DestEnd starts the dest end of one tunnel channel: it announces its
// seeds, passes QEMU's return path on, and decodes the stream towards
// QEMU; when the stream ends it keeps its pages as the next seeds.
func (c *Codec) DestEnd() tunnel.CodecEnd { return &destEnd{c: c} }

type destEnd struct {
	c     *Codec
	once  sync.Once
	seeds *seedPages
}

// load reads the seed file once per channel; an unusable file is no seeds
// (and reported in the statistics), never a failed migration.
func (d *destEnd) load() *seedPages {
	d.once.Do(func() {
		d.seeds = &seedPages{}
		if d.c.cfg.SeedFile == "" {
			return
		}
		sp, err := loadSeeds(d.c.cfg.SeedFile, d.c.cfg.maxSlots())
		if err != nil {
			d.c.mu.Lock()
			d.c.seedErr = err
			d.c.mu.Unlock()
			return
		}
		d.seeds = sp
	})
	return d.seeds
}

func (d *destEnd) ToPeer(dst io.Writer, src io.Reader) error {
	if _, err := dst.Write(appendAnnouncement(nil, d.load())); err != nil {
		return writeErr(err)
	}
	_, err := io.Copy(dst, src)
	return err
}

func (d *destEnd) ToLocal(dst io.Writer, src io.Reader) error {
	dec, err := d.c.decode(dst, src, d.load())
	if dec.st == nil {
		return err
	}
	if path := d.c.cfg.SeedFile; path != "" {
		d.c.saves.Add(1)
		go func() { // ends when the file is written; Close waits for it
			defer d.c.saves.Done()
			defer dec.st.release()
			if err := saveSeeds(path, dec.st, d.seeds); err != nil {
				d.c.mu.Lock()
				d.c.seedErr = err
				d.c.mu.Unlock()
			}
		}()
		return err
	}
	dec.st.release()
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
