package wanlink

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Config describes the emulated link. The zero Config is a link with no
// limit and no delay: bytes pass straight through.
type Config struct {
	// Bandwidth is the rate of each direction in bits per second; 0 means
	// unlimited.
	Bandwidth int64
	// RTT is the round-trip time; each direction delays its bytes by RTT/2.
	RTT time.Duration
	// Jitter is extra one-way delay, drawn uniformly from [0, Jitter] for
	// every chunk; bytes of one connection are never reordered.
	Jitter time.Duration
	// Seed seeds the jitter draws, so a run can be repeated.
	Seed int64
	// Window bounds the bytes of one connection direction that the link
	// holds at once, from being read from the sender until they are
	// acknowledged (delivered and RTT/2 later). A sender blocks beyond it.
	// 0 means DefaultWindow(Bandwidth, RTT).
	Window int64
}

// Limits of a Config.
const (
	MinWindow = 16 << 10  // smallest Window accepted
	MaxWindow = 256 << 20 // largest Window, given or defaulted
	MaxRTT    = time.Minute
	MaxJitter = time.Minute
	// MaxBandwidth is 1 Tbit/s; an unlimited link is Bandwidth 0.
	MaxBandwidth = 1_000_000_000_000
)

// DefaultWindow is the in-flight bound of a connection direction when
// Config.Window is 0: twice the bandwidth-delay product, at least 256 KiB
// and at most MaxWindow.
func DefaultWindow(bandwidth int64, rtt time.Duration) int64 {
	w := 2 * BDP(bandwidth, rtt)
	return min(max(w, 256<<10), MaxWindow)
}

// BDP is the bandwidth-delay product in bytes: what a link of that rate
// and round-trip time holds between sending a byte and its
// acknowledgement. It is 0 for an unlimited link.
func BDP(bandwidth int64, rtt time.Duration) int64 {
	if bandwidth <= 0 || rtt <= 0 {
		return 0
	}
	return int64(float64(bandwidth) / 8 * rtt.Seconds())
}

// Validate reports whether c is a link this package can emulate.
func (c Config) Validate() error {
	switch {
	case c.Bandwidth < 0:
		return fmt.Errorf("wanlink: bandwidth %d bit/s is negative", c.Bandwidth)
	case c.Bandwidth > MaxBandwidth:
		return fmt.Errorf("wanlink: bandwidth %s is above %s", FormatBandwidth(c.Bandwidth), FormatBandwidth(MaxBandwidth))
	case c.RTT < 0:
		return fmt.Errorf("wanlink: rtt %v is negative", c.RTT)
	case c.RTT > MaxRTT:
		return fmt.Errorf("wanlink: rtt %v is above %v", c.RTT, MaxRTT)
	case c.Jitter < 0:
		return fmt.Errorf("wanlink: jitter %v is negative", c.Jitter)
	case c.Jitter > MaxJitter:
		return fmt.Errorf("wanlink: jitter %v is above %v", c.Jitter, MaxJitter)
	case c.Window != 0 && c.Window < MinWindow:
		return fmt.Errorf("wanlink: window %d bytes is below %d", c.Window, MinWindow)
	case c.Window > MaxWindow:
		return fmt.Errorf("wanlink: window %d bytes is above %d", c.Window, MaxWindow)
	}
	return nil
}

// window is the in-flight bound in force.
func (c Config) window() int64 {
	if c.Window != 0 {
		return c.Window
	}
	return DefaultWindow(c.Bandwidth, c.RTT)
}

// String describes c, as in "bandwidth 100mbit rtt 50ms jitter 2ms".
func (c Config) String() string {
	bw := "unlimited"
	if c.Bandwidth > 0 {
		bw = FormatBandwidth(c.Bandwidth)
	}
	s := fmt.Sprintf("bandwidth %s rtt %v", bw, c.RTT)
	if c.Jitter > 0 {
		s += fmt.Sprintf(" jitter %v", c.Jitter)
	}
	if c.Window > 0 {
		s += fmt.Sprintf(" window %d", c.Window)
	}
	return s
}

// ParseConfig builds and validates a Config from the values of the
// wanlink command's flags: --bandwidth (see ParseBandwidth), --rtt and
// --jitter (time.ParseDuration; empty means 0).
func ParseConfig(bandwidth, rtt, jitter string) (Config, error) {
	var c Config
	var err error
	if c.Bandwidth, err = ParseBandwidth(bandwidth); err != nil {
		return Config{}, err
	}
	if c.RTT, err = parseDuration("rtt", rtt); err != nil {
		return Config{}, err
	}
	if c.Jitter, err = parseDuration("jitter", jitter); err != nil {
		return Config{}, err
	}
	return c, c.Validate()
}

func parseDuration(name, s string) (time.Duration, error) {
	if strings.TrimSpace(s) == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("wanlink: %s: %w", name, err)
	}
	return d, nil
}

// ErrBandwidth is wrapped by every ParseBandwidth error.
var ErrBandwidth = errors.New("bad bandwidth")

// bandwidth units: bits per second per unit. Bit units follow tc(8) and
// are case-insensitive ("mbit"); byte units end in "/s" and are
// case-sensitive, since "MB/s" and "Mb/s" differ by eight.
var (
	bitUnits = map[string]float64{
		"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12,
		"kibit": 1 << 10, "mibit": 1 << 20, "gibit": 1 << 30, "tibit": 1 << 40,
	}
	rateUnits = map[string]float64{
		"b/s": 1, "kb/s": 1e3, "Kb/s": 1e3, "Mb/s": 1e6, "Gb/s": 1e9, "Tb/s": 1e12,
		"B/s": 8, "kB/s": 8e3, "KB/s": 8e3, "MB/s": 8e6, "GB/s": 8e9, "TB/s": 8e12,
		"KiB/s": 8 << 10, "MiB/s": 8 << 20, "GiB/s": 8 << 30, "TiB/s": 8 << 40,
	}
)

// ParseBandwidth parses a rate into bits per second: a decimal number and
// a unit, as in "100mbit", "1gbit", "512kbit", "1.5gbit", "10MB/s",
// "100Mb/s" or "4MiB/s". "0" and "unlimited" give 0, no limit. Bit units
// (bit, kbit, mbit, gbit, tbit and kibit...tibit) are case-insensitive;
// units ending in "/s" are case-sensitive, B for bytes and b for bits.
// "bps" is refused: tc reads it as bytes, most people as bits.
func ParseBandwidth(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "0" || strings.EqualFold(t, "unlimited") {
		return 0, nil
	}
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i <= 0 {
		return 0, fmt.Errorf("wanlink: %w %q: want a number and a unit, as in 100mbit or 10MB/s", ErrBandwidth, s)
	}
	num, unit := t[:i], strings.TrimSpace(t[i:])
	per, ok := rateUnits[unit]
	if !ok {
		per, ok = bitUnits[strings.ToLower(unit)]
	}
	if !ok {
		if strings.HasSuffix(strings.ToLower(unit), "bps") {
			return 0, fmt.Errorf("wanlink: %w %q: bps is ambiguous; write mbit for bits or MB/s for bytes", ErrBandwidth, s)
		}
		return 0, fmt.Errorf("wanlink: %w %q: unknown unit %q", ErrBandwidth, s, unit)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("wanlink: %w %q: %w", ErrBandwidth, s, err)
	}
	bits := math.Round(v * per)
	switch {
	case bits == 0 && v == 0:
		return 0, nil
	case bits < 1:
		return 0, fmt.Errorf("wanlink: %w %q: below 1 bit/s", ErrBandwidth, s)
	case bits > MaxBandwidth:
		return 0, fmt.Errorf("wanlink: %w %q: above %s", ErrBandwidth, s, FormatBandwidth(MaxBandwidth))
	}
	return int64(bits), nil
}

// FormatBandwidth renders bits per second in the largest tc bit unit that
// keeps it exact ("100mbit", "1500kbit", "1234bit"); 0 is "unlimited".
func FormatBandwidth(bps int64) string {
	if bps == 0 {
		return "unlimited"
	}
	for _, u := range []struct {
		name string
		per  int64
	}{{"tbit", 1e12}, {"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}} {
		if bps%u.per == 0 {
			return strconv.FormatInt(bps/u.per, 10) + u.name
		}
	}
	return strconv.FormatInt(bps, 10) + "bit"
}
