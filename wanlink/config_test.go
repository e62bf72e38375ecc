package wanlink

import (
	"errors"
	"testing"
	"time"
)

func TestParseBandwidth(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"100mbit", 100_000_000},
		{"1gbit", 1_000_000_000},
		{"512kbit", 512_000},
		{"1.5gbit", 1_500_000_000},
		{" 100MBit ", 100_000_000},
		{"64bit", 64},
		{"1mibit", 1 << 20},
		{"10MB/s", 80_000_000},
		{"10 MB/s", 80_000_000},
		{"100Mb/s", 100_000_000},
		{"4MiB/s", 32 << 20},
		{"125kB/s", 1_000_000},
		{"1tbit", 1_000_000_000_000},
		{"0", 0},
		{"0mbit", 0},
		{"unlimited", 0},
	} {
		got, err := ParseBandwidth(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseBandwidth(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestParseBandwidthRefuses(t *testing.T) {
	for _, in := range []string{
		"", "100", "mbit", "100mbps", "10bps", "10Mbps", "-1mbit", "1.2.3mbit",
		"fast", "0.1bit", "2tbit", "10mb/s", "10MB", "1e3mbit", "NaNmbit",
	} {
		if got, err := ParseBandwidth(in); !errors.Is(err, ErrBandwidth) {
			t.Errorf("ParseBandwidth(%q) = %d, %v; want an ErrBandwidth", in, got, err)
		}
	}
}

func TestFormatBandwidth(t *testing.T) {
	for _, tc := range []struct {
		in   int64
		want string
	}{
		{0, "unlimited"}, {100_000_000, "100mbit"}, {1_500_000, "1500kbit"},
		{1_000_000_000, "1gbit"}, {1234, "1234bit"}, {1_000_000_000_000, "1tbit"},
	} {
		if got := FormatBandwidth(tc.in); got != tc.want {
			t.Errorf("FormatBandwidth(%d) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzParseBandwidth(f *testing.F) {
	for _, s := range []string{"100mbit", "10MB/s", "1.5gbit", "0", "4MiB/s", "7bit", "1tbit", ".5kbit"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseBandwidth(s)
		if err != nil {
			return
		}
		if v < 0 || v > MaxBandwidth {
			t.Fatalf("ParseBandwidth(%q) = %d, out of range", s, v)
		}
		back, err := ParseBandwidth(FormatBandwidth(v))
		if err != nil || back != v {
			t.Fatalf("%q -> %d -> %q -> %d, %v", s, v, FormatBandwidth(v), back, err)
		}
	})
}

func TestParseConfig(t *testing.T) {
	got, err := ParseConfig("100mbit", "50ms", "2ms")
	want := Config{Bandwidth: 100_000_000, RTT: 50 * time.Millisecond, Jitter: 2 * time.Millisecond}
	if err != nil || got != want {
		t.Fatalf("ParseConfig = %+v, %v; want %+v", got, err, want)
	}
	if got, err := ParseConfig("unlimited", "", ""); err != nil || got != (Config{}) {
		t.Errorf("ParseConfig of an unlimited link = %+v, %v", got, err)
	}
	for _, in := range [][3]string{
		{"100mbps", "50ms", ""},
		{"100mbit", "fifty", ""},
		{"100mbit", "50ms", "-1ms"},
		{"100mbit", "2h", ""},
	} {
		if got, err := ParseConfig(in[0], in[1], in[2]); err == nil {
			t.Errorf("ParseConfig%q = %+v, want an error", in, got)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{}, true},
		{Config{Bandwidth: 100_000_000, RTT: 50 * time.Millisecond, Jitter: time.Millisecond}, true},
		{Config{Window: MinWindow}, true},
		{Config{Window: MaxWindow}, true},
		{Config{Bandwidth: -1}, false},
		{Config{Bandwidth: MaxBandwidth + 1}, false},
		{Config{RTT: -time.Millisecond}, false},
		{Config{RTT: MaxRTT + 1}, false},
		{Config{Jitter: -1}, false},
		{Config{Jitter: MaxJitter + 1}, false},
		{Config{Window: MinWindow - 1}, false},
		{Config{Window: MaxWindow + 1}, false},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v.Validate() = %v, want ok %v", tc.cfg, err, tc.ok)
		}
		if _, err := New(tc.cfg, nil); (err == nil) != tc.ok {
			t.Errorf("New(%+v) = %v, want ok %v", tc.cfg, err, tc.ok)
		}
	}
}

func TestDefaultWindow(t *testing.T) {
	for _, tc := range []struct {
		bw   int64
		rtt  time.Duration
		want int64
	}{
		{100_000_000, 50 * time.Millisecond, 1_250_000}, // 2 x 625 kB
		{0, 50 * time.Millisecond, 256 << 10},
		{10_000_000, 10 * time.Millisecond, 256 << 10},
		{MaxBandwidth, time.Second, MaxWindow},
	} {
		if got := DefaultWindow(tc.bw, tc.rtt); got != tc.want {
			t.Errorf("DefaultWindow(%s, %v) = %d, want %d", FormatBandwidth(tc.bw), tc.rtt, got, tc.want)
		}
	}
}
