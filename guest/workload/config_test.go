package workload

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestWithDefaults(t *testing.T) {
	got := Config{Name: MemDirty}.WithDefaults(1<<30 + 100)
	want := Config{Name: MemDirty, WSSBytes: 512 << 20, PagesPerSec: 5000, BytesPerPage: 8, HotFraction: 1, HotWeight: 1}
	if got != want {
		t.Errorf("defaults = %+v, want %+v", got, want)
	}
	skew := Config{Name: MemDirty, HotFraction: 0.1, HotWeight: 0.9}.WithDefaults(1 << 30)
	if skew.HotFraction != 0.1 || skew.HotWeight != 0.9 {
		t.Errorf("defaults overrode skew: %+v", skew)
	}
	if d := (Config{Name: MemDirty, DiskWSSBytes: 16 << 20}).WithDefaults(1 << 30); d.DiskWritesPerSec != DefaultDiskWritesPerSec {
		t.Errorf("disk rate default: %+v", d)
	}
	if idle := (Config{Name: Idle}).WithDefaults(1 << 30); idle != (Config{Name: Idle}) {
		t.Errorf("idle got defaults: %+v", idle)
	}
}

func TestValidate(t *testing.T) {
	ok := Config{Name: MemDirty}.WithDefaults(1 << 30)
	with := func(f func(*Config)) Config { c := ok; f(&c); return c }
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // substring; empty means valid
	}{
		{"defaults", ok, ""},
		{"idle", Config{Name: Idle}, ""},
		{"empty name", Config{}, "name is empty"},
		{"unknown name", Config{Name: "stress"}, `unknown name "stress"`},
		{"zero wss", with(func(c *Config) { c.WSSBytes = 0 }), "wss_bytes must be positive"},
		{"unaligned wss", with(func(c *Config) { c.WSSBytes = 4097 }), "multiple of 4096"},
		{"zero rate", with(func(c *Config) { c.PagesPerSec = 0 }), "pages_per_sec"},
		{"huge rate", with(func(c *Config) { c.PagesPerSec = 1e8 }), "pages_per_sec"},
		{"bpp 0", with(func(c *Config) { c.BytesPerPage = 0 }), "bytes_per_page"},
		{"bpp 4097", with(func(c *Config) { c.BytesPerPage = 4097 }), "bytes_per_page"},
		{"bpp 4096", with(func(c *Config) { c.BytesPerPage = 4096 }), ""},
		{"bpp 1", with(func(c *Config) { c.BytesPerPage = 1 }), ""},
		{"hot fraction 0", with(func(c *Config) { c.HotFraction = 0 }), "hot_fraction"},
		{"hot fraction 1.5", with(func(c *Config) { c.HotFraction = 1.5 }), "hot_fraction"},
		{"hot weight -1", with(func(c *Config) { c.HotWeight = -1 }), "hot_weight"},
		{"skew without weight", with(func(c *Config) { c.HotFraction, c.HotWeight = 0.1, 0 }), "hot_weight must be in (0,1]"},
		{"skew", with(func(c *Config) { c.HotFraction, c.HotWeight = 0.1, 0.9 }), ""},
		{"disk", with(func(c *Config) { c.DiskWSSBytes, c.DiskWritesPerSec = 16<<20, 200 }), ""},
		{"unaligned disk", with(func(c *Config) { c.DiskWSSBytes, c.DiskWritesPerSec = 4097, 200 }), "disk_wss_bytes must be"},
		{"negative disk", with(func(c *Config) { c.DiskWSSBytes, c.DiskWritesPerSec = -4096, 200 }), "disk_wss_bytes must be"},
		{"disk rate without disk", with(func(c *Config) { c.DiskWritesPerSec = 200 }), "without a disk working set"},
		{"disk without rate", with(func(c *Config) { c.DiskWSSBytes = 4096 }), "disk_writes_per_sec must be"},
		{"huge disk rate", with(func(c *Config) { c.DiskWSSBytes, c.DiskWritesPerSec = 4096, 1e6 }), "disk_writes_per_sec must be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate(%+v) = %v, want nil", tt.cfg, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate(%+v) = %v, want error containing %q", tt.cfg, err, tt.wantErr)
			}
		})
	}
}

func TestParseCmdline(t *testing.T) {
	tests := []struct {
		cmdline string
		want    Config
		wantErr string
	}{
		{"console=ttyS0 quiet", Config{Name: Idle}, ""},
		{"vmigrate.workload=idle", Config{Name: Idle}, ""},
		{"console=ttyS0 vmigrate.workload=memdirty vmigrate.wss=256M vmigrate.rate=5000 vmigrate.bpp=8 vmigrate.hot=0.1:0.9 vmigrate.ip=10.0.2.15/24",
			Config{Name: MemDirty, WSSBytes: 256 << 20, PagesPerSec: 5000, BytesPerPage: 8, HotFraction: 0.1, HotWeight: 0.9}, ""},
		{"vmigrate.workload=memdirty vmigrate.wss=1g", Config{Name: MemDirty, WSSBytes: 1 << 30}, ""},
		{"vmigrate.workload=memdirty vmigrate.wss=12345", Config{Name: MemDirty, WSSBytes: 12345}, ""},
		{"vmigrate.wss=256Q", Config{}, "vmigrate.wss"},
		{"vmigrate.rate=fast", Config{}, "vmigrate.rate"},
		{"vmigrate.bpp=", Config{}, "vmigrate.bpp"},
		{"vmigrate.hot=0.1", Config{}, "HOT_FRACTION:HOT_WEIGHT"},
		{"vmigrate.hot=0.1:x", Config{}, "vmigrate.hot"},
		{"vmigrate.workload=memdirty vmigrate.disk=16M vmigrate.diskrate=200",
			Config{Name: MemDirty, DiskWSSBytes: 16 << 20, DiskWritesPerSec: 200}, ""},
		{"vmigrate.disk=16Q", Config{}, "vmigrate.disk"},
		{"vmigrate.diskrate=x", Config{}, "vmigrate.diskrate"},
	}
	for _, tt := range tests {
		got, err := ParseCmdline(tt.cmdline)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseCmdline(%q) error = %v, want %q", tt.cmdline, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseCmdline(%q) = %+v, %v; want %+v", tt.cmdline, got, err, tt.want)
		}
	}
}

func TestCmdlineRoundTrip(t *testing.T) {
	for _, c := range []Config{
		{Name: Idle},
		{Name: MemDirty},
		{Name: MemDirty, WSSBytes: 256 << 20, PagesPerSec: 12000, BytesPerPage: 64, HotFraction: 0.25, HotWeight: 0.75},
		{Name: MemDirty, WSSBytes: 3 * 4096},
		{Name: MemDirty, WSSBytes: 32 << 20, DiskWSSBytes: 16 << 20, DiskWritesPerSec: 200},
	} {
		got, err := ParseCmdline(strings.Join(c.CmdlineArgs(), " "))
		if err != nil || got != c {
			t.Errorf("round trip of %+v via %q = %+v, %v", c, c.CmdlineArgs(), got, err)
		}
	}
}

func TestSizes(t *testing.T) {
	for s, want := range map[string]int64{"0": 0, "4096": 4096, "4K": 4096, "256M": 256 << 20, "2g": 2 << 30, "1T": 1 << 40} {
		if got, err := ParseSize(s); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "M", "-1", "1.5G", "10E", "9999999999T"} {
		if _, err := ParseSize(s); err == nil {
			t.Errorf("ParseSize(%q) succeeded", s)
		}
	}
	for n, want := range map[int64]string{0: "0", 4096: "4K", 256 << 20: "256M", 3 << 30: "3G", 12345: "12345", 1536 << 10: "1536K"} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestConfigJSON(t *testing.T) {
	in := `{"name":"memdirty","wss_bytes":268435456,"pages_per_sec":5000,"bytes_per_page":8,"hot_fraction":0.1,"hot_weight":0.9}`
	var c Config
	if err := json.Unmarshal([]byte(in), &c); err != nil {
		t.Fatal(err)
	}
	want := Config{Name: MemDirty, WSSBytes: 256 << 20, PagesPerSec: 5000, BytesPerPage: 8, HotFraction: 0.1, HotWeight: 0.9}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("decoded %+v, want %+v", c, want)
	}
	out, _ := json.Marshal(c)
	if string(out) != in {
		t.Errorf("encoded %s, want %s", out, in)
	}
}
