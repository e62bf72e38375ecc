package pagecodec

import "time"

// Count is the pages of one encoding and the bytes they took.
type Count struct {
	Pages int64 `json:"pages"`
	// Bytes is what the pages took on the wire (the codec's output).
	Bytes int64 `json:"bytes"`
}

func (c *Count) add(b Count) { c.Pages += b.Pages; c.Bytes += b.Bytes }

// Encodings counts pages by the encoding they went out in.
type Encodings struct {
	Zero  Count `json:"zero"`
	Ref   Count `json:"ref"`
	Delta Count `json:"delta"`
	LZ4   Count `json:"lz4"`
	// Zstd pages were compressed with zstd against the pages compressed
	// before them (EffortMax).
	Zstd Count `json:"zstd"`
	Raw  Count `json:"raw"`
	// Seed pages were found among the pages the dest end announced.
	Seed Count `json:"seed"`
}

func (e *Encodings) add(b Encodings) {
	e.Zero.add(b.Zero)
	e.Ref.add(b.Ref)
	e.Delta.add(b.Delta)
	e.LZ4.add(b.LZ4)
	e.Zstd.add(b.Zstd)
	e.Raw.add(b.Raw)
	e.Seed.add(b.Seed)
}

// Stats describe what the encoder did to the streams it carried.
type Stats struct {
	Streams int `json:"streams"`
	// StreamBytes is what QEMU sent, EncodedBytes what the codec passed
	// to the tunnel for it.
	StreamBytes  int64     `json:"stream_bytes"`
	EncodedBytes int64     `json:"encoded_bytes"`
	Pages        Encodings `json:"pages"`
	// ZeroRecords are QEMU's own ZERO records, carried as runs.
	ZeroRecords Count `json:"zero_records"`
	// LiteralBytes are stream bytes carried as they are: section framing,
	// device state, and what the codec does not change.
	LiteralBytes int64 `json:"literal_bytes"`
	// Passthrough says why the codec stopped parsing (normally "device
	// state", at the switchover's end).
	Passthrough string `json:"passthrough,omitempty"`
	// CPU is the encoder's CPU time; DecodeCPU the decoder's, when it ran
	// in this process.
	CPU       time.Duration `json:"-"`
	CPUMillis float64       `json:"cpu_ms"`
	DecodeCPU time.Duration `json:"-"`
	DecodeMs  float64       `json:"decode_cpu_ms,omitempty"`
	// Cache is the encoder's page cache (the decoder keeps a copy of it).
	CachePages     int64 `json:"cache_pages"`
	CacheMaxBytes  int64 `json:"cache_max_bytes"`
	CacheBytes     int64 `json:"cache_bytes"`
	CacheEvictions int64 `json:"cache_evictions"`
	// SeedPages is how many pages the dest end announced; SeedError why
	// the dest end could not use its seed file, if it could not.
	SeedPages int64  `json:"seed_pages"`
	SeedError string `json:"seed_error,omitempty"`
	// Effort is the encoder's setting; EffortMs the time the encoders
	// spent at each level (with auto, where the link took them).
	Effort   string                       `json:"effort,omitempty"`
	Spent    [EffortMax + 1]time.Duration `json:"-"` // by Effort
	EffortMs EffortTimes                  `json:"effort_ms"`
}

// EffortTimes is milliseconds spent at each effort level.
type EffortTimes struct {
	Fast float64 `json:"fast"`
	LZ4  float64 `json:"lz4"`
	Max  float64 `json:"max"`
}

func (s *Stats) add(b Stats) {
	s.Streams += b.Streams
	s.StreamBytes += b.StreamBytes
	s.EncodedBytes += b.EncodedBytes
	s.Pages.add(b.Pages)
	s.ZeroRecords.add(b.ZeroRecords)
	s.LiteralBytes += b.LiteralBytes
	if b.Passthrough != "" {
		s.Passthrough = b.Passthrough
	}
	s.CPU += b.CPU
	s.CachePages += b.CachePages
	s.CacheMaxBytes += b.CacheMaxBytes
	s.CacheBytes += b.CacheBytes
	s.CacheEvictions += b.CacheEvictions
	s.SeedPages += b.SeedPages
	if b.Effort != "" {
		s.Effort = b.Effort
	}
	for i := range s.Spent {
		s.Spent[i] += b.Spent[i]
	}
}

func (s *Stats) finish() {
	s.CPUMillis = float64(s.CPU.Microseconds()) / 1000
	s.DecodeMs = float64(s.DecodeCPU.Microseconds()) / 1000
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	s.EffortMs = EffortTimes{Fast: ms(s.Spent[EffortFast]), LZ4: ms(s.Spent[EffortLZ4]), Max: ms(s.Spent[EffortMax])}
}
