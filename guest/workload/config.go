package workload

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Workload names accepted in Config.Name.
const (
	// Idle runs nothing: no working set is allocated.
	Idle = "idle"
	// MemDirty populates a working set and dirties it at a target rate.
	MemDirty = "memdirty"
)

// Defaults applied by Config.WithDefaults.
const (
	DefaultPagesPerSec  = 5000
	DefaultBytesPerPage = 8
	// MaxPagesPerSec bounds the target rate; far above what a guest reaches.
	MaxPagesPerSec = 10_000_000

	// DefaultDiskWritesPerSec is the disk writer's rate when a disk working
	// set is given without one.
	DefaultDiskWritesPerSec = 100
	// MaxDiskWritesPerSec bounds the disk writer's target rate (each write
	// is a synchronous 4 KiB write).
	MaxDiskWritesPerSec = 100_000
)

// Kernel command line keys read by ParseCmdline and written by Config.CmdlineArgs.
const (
	KeyWorkload     = "vmigrate.workload" // idle | memdirty
	KeyWSS          = "vmigrate.wss"      // working-set size, bytes with optional K/M/G/T suffix
	KeyPagesPerSec  = "vmigrate.rate"     // target dirtied pages per second
	KeyBytesPerPage = "vmigrate.bpp"      // bytes changed per dirtied page
	KeyHot          = "vmigrate.hot"      // HOT_FRACTION:HOT_WEIGHT, e.g. 0.1:0.9
	KeyBody         = "vmigrate.body"     // random | text | files: what the pages hold besides the changing bytes
	KeyDiskWSS      = "vmigrate.disk"     // disk working-set size (from the start of /dev/vda), bytes with optional suffix
	KeyDiskRate     = "vmigrate.diskrate" // target disk blocks written per second
)

// Page bodies.
const (
	BodyRandom = "random" // incompressible: the worst case for a codec
	BodyText   = "text"   // Go source text, about as compressible as a page cache
	// BodyFiles pages are page-aligned pages of real files (the guest
	// image's corpus of Debian kernel modules, SetFilesCorpus), in order,
	// as a page cache holds them: neither a per-page nor a cross-page
	// compressor is flattered, since no page repeats within 32 MiB.
	BodyFiles = "files"
)

// Config selects and parameterises a workload. The zero value of a numeric
// field means "default" (see WithDefaults).
type Config struct {
	Name         string  `json:"name"`
	WSSBytes     int64   `json:"wss_bytes,omitempty"`
	PagesPerSec  int     `json:"pages_per_sec,omitempty"`
	BytesPerPage int     `json:"bytes_per_page,omitempty"`
	HotFraction  float64 `json:"hot_fraction,omitempty"`
	HotWeight    float64 `json:"hot_weight,omitempty"`
	Body         string  `json:"body,omitempty"` // BodyRandom (default), BodyText or BodyFiles

	// DiskWSSBytes, when not 0, also runs the disk writer over the first
	// DiskWSSBytes of the guest's disk, in DiskBlockSize blocks (memdirty only).
	DiskWSSBytes     int64 `json:"disk_wss_bytes,omitempty"`
	DiskWritesPerSec int   `json:"disk_writes_per_sec,omitempty"` // blocks per second
}

// WithDefaults returns c with unset memdirty fields filled in: the working set
// is half of memTotal (rounded down to a page), 5000 pages/s, 8 bytes per
// page, and a uniform distribution (HotFraction 1); with a disk working set,
// 100 disk writes/s. An idle config is returned unchanged.
func (c Config) WithDefaults(memTotal int64) Config {
	if c.Name != MemDirty {
		return c
	}
	if c.WSSBytes == 0 {
		c.WSSBytes = memTotal / 2 / PageSize * PageSize
	}
	if c.PagesPerSec == 0 {
		c.PagesPerSec = DefaultPagesPerSec
	}
	if c.BytesPerPage == 0 {
		c.BytesPerPage = DefaultBytesPerPage
	}
	if c.HotFraction == 0 {
		c.HotFraction = 1
		if c.HotWeight == 0 {
			c.HotWeight = 1
		}
	}
	if c.DiskWSSBytes != 0 && c.DiskWritesPerSec == 0 {
		c.DiskWritesPerSec = DefaultDiskWritesPerSec
	}
	return c
}

// Validate reports the first invalid field. Call it after WithDefaults.
func (c Config) Validate() error {
	switch c.Name {
	case Idle:
		return nil
	case MemDirty:
	case "":
		return errors.New("workload: name is empty, want idle or memdirty")
	default:
		return fmt.Errorf("workload: unknown name %q, want idle or memdirty", c.Name)
	}
	switch {
	case c.WSSBytes <= 0:
		return fmt.Errorf("workload: wss_bytes must be positive, got %d", c.WSSBytes)
	case c.WSSBytes%PageSize != 0:
		return fmt.Errorf("workload: wss_bytes must be a multiple of %d, got %d", PageSize, c.WSSBytes)
	case c.WSSBytes/PageSize > 1<<31-1:
		return fmt.Errorf("workload: wss_bytes %d is too large", c.WSSBytes)
	case c.PagesPerSec <= 0 || c.PagesPerSec > MaxPagesPerSec:
		return fmt.Errorf("workload: pages_per_sec must be in 1..%d, got %d", MaxPagesPerSec, c.PagesPerSec)
	case c.BytesPerPage < 1 || c.BytesPerPage > PageSize:
		return fmt.Errorf("workload: bytes_per_page must be in 1..%d, got %d", PageSize, c.BytesPerPage)
	case !(c.HotFraction > 0 && c.HotFraction <= 1):
		return fmt.Errorf("workload: hot_fraction must be in (0,1], got %g", c.HotFraction)
	case !(c.HotWeight >= 0 && c.HotWeight <= 1):
		return fmt.Errorf("workload: hot_weight must be in [0,1], got %g", c.HotWeight)
	case c.HotFraction < 1 && c.HotWeight == 0:
		return fmt.Errorf("workload: hot_weight must be in (0,1] when hot_fraction < 1, got 0")
	case c.Body != "" && c.Body != BodyRandom && c.Body != BodyText && c.Body != BodyFiles:
		return fmt.Errorf("workload: body must be %s, %s or %s, got %q", BodyRandom, BodyText, BodyFiles, c.Body)
	case c.DiskWSSBytes < 0 || c.DiskWSSBytes%DiskBlockSize != 0:
		return fmt.Errorf("workload: disk_wss_bytes must be a non-negative multiple of %d, got %d", DiskBlockSize, c.DiskWSSBytes)
	case c.DiskWSSBytes/DiskBlockSize > 1<<31-1:
		return fmt.Errorf("workload: disk_wss_bytes %d is too large", c.DiskWSSBytes)
	case c.DiskWSSBytes == 0 && c.DiskWritesPerSec != 0:
		return fmt.Errorf("workload: disk_writes_per_sec %d without a disk working set (disk_wss_bytes)", c.DiskWritesPerSec)
	case c.DiskWSSBytes != 0 && (c.DiskWritesPerSec <= 0 || c.DiskWritesPerSec > MaxDiskWritesPerSec):
		return fmt.Errorf("workload: disk_writes_per_sec must be in 1..%d, got %d", MaxDiskWritesPerSec, c.DiskWritesPerSec)
	}
	return nil
}

// ParseCmdline reads the vmigrate.* workload keys from a kernel command line
// (the contents of /proc/cmdline). Without vmigrate.workload the result is
// idle. Other words are ignored. Defaults are not applied.
func ParseCmdline(cmdline string) (Config, error) {
	c := Config{Name: Idle}
	for _, word := range strings.Fields(cmdline) {
		key, val, _ := strings.Cut(word, "=")
		var err error
		switch key {
		case KeyWorkload:
			c.Name = val
		case KeyWSS:
			c.WSSBytes, err = ParseSize(val)
		case KeyPagesPerSec:
			c.PagesPerSec, err = strconv.Atoi(val)
		case KeyBytesPerPage:
			c.BytesPerPage, err = strconv.Atoi(val)
		case KeyHot:
			c.HotFraction, c.HotWeight, err = parseHot(val)
		case KeyBody:
			c.Body = val
		case KeyDiskWSS:
			c.DiskWSSBytes, err = ParseSize(val)
		case KeyDiskRate:
			c.DiskWritesPerSec, err = strconv.Atoi(val)
		default:
			continue
		}
		if err != nil {
			return Config{}, fmt.Errorf("workload: parse %s: %w", key, err)
		}
	}
	return c, nil
}

func parseHot(s string) (fraction, weight float64, err error) {
	f, w, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, fmt.Errorf("%q: want HOT_FRACTION:HOT_WEIGHT, e.g. 0.1:0.9", s)
	}
	if fraction, err = strconv.ParseFloat(f, 64); err != nil {
		return 0, 0, err
	}
	if weight, err = strconv.ParseFloat(w, 64); err != nil {
		return 0, 0, err
	}
	return fraction, weight, nil
}

// CmdlineArgs renders c as kernel command line words that ParseCmdline reads
// back. Zero fields are left out (the guest applies its defaults).
func (c Config) CmdlineArgs() []string {
	name := c.Name
	if name == "" {
		name = Idle
	}
	args := []string{KeyWorkload + "=" + name}
	if name == Idle {
		return args
	}
	if c.WSSBytes != 0 {
		args = append(args, KeyWSS+"="+FormatSize(c.WSSBytes))
	}
	if c.PagesPerSec != 0 {
		args = append(args, KeyPagesPerSec+"="+strconv.Itoa(c.PagesPerSec))
	}
	if c.BytesPerPage != 0 {
		args = append(args, KeyBytesPerPage+"="+strconv.Itoa(c.BytesPerPage))
	}
	if c.HotFraction != 0 || c.HotWeight != 0 {
		args = append(args, KeyHot+"="+
			strconv.FormatFloat(c.HotFraction, 'g', -1, 64)+":"+
			strconv.FormatFloat(c.HotWeight, 'g', -1, 64))
	}
	if c.Body != "" {
		args = append(args, KeyBody+"="+c.Body)
	}
	if c.DiskWSSBytes != 0 {
		args = append(args, KeyDiskWSS+"="+FormatSize(c.DiskWSSBytes))
	}
	if c.DiskWritesPerSec != 0 {
		args = append(args, KeyDiskRate+"="+strconv.Itoa(c.DiskWritesPerSec))
	}
	return args
}

var sizeSuffixes = []struct {
	suffix string
	shift  uint
}{{"K", 10}, {"M", 20}, {"G", 30}, {"T", 40}}

// ParseSize parses a byte count with an optional binary suffix: 4096, 512K,
// 256M, 1G (case-insensitive).
func ParseSize(s string) (int64, error) {
	num, shift := s, uint(0)
	for _, sf := range sizeSuffixes {
		if strings.HasSuffix(strings.ToUpper(s), sf.suffix) {
			num, shift = s[:len(s)-1], sf.shift
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: want a non-negative integer with optional K, M, G or T suffix", s)
	}
	if n > (1<<63-1)>>shift {
		return 0, fmt.Errorf("size %q overflows", s)
	}
	return n << shift, nil
}

// FormatSize renders n with the largest binary suffix that divides it exactly.
func FormatSize(n int64) string {
	for i := len(sizeSuffixes) - 1; i >= 0; i-- {
		sf := sizeSuffixes[i]
		if n != 0 && n%(1<<sf.shift) == 0 {
			return strconv.FormatInt(n>>sf.shift, 10) + sf.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}
