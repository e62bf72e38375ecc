package blockcodec

import "time"

// Count is one kind of record: how many blocks went that way, the write
// payload bytes they cover and the bytes they took on the channel.
// Blocks are reference units (or the partial pieces at a write's ends)
// for zero and ref, groups of up to Config.BlockSize bytes for lz4,
// deflate and raw.
type Count struct {
	Blocks int64 `json:"blocks"`
	Bytes  int64 `json:"bytes"`
	Wire   int64 `json:"wire_bytes"`
}

func (c *Count) add(b Count) {
	c.Blocks += b.Blocks
	c.Bytes += b.Bytes
	c.Wire += b.Wire
}

// Stats describe the channels a Codec carried: the source end's encoding
// and, when the dest end runs in the same process, its decoding. They
// add up over channels, running ones included (as of their last flush).
type Stats struct {
	Channels int `json:"channels"`
	// StreamBytes is what the NBD client sent, EncodedBytes what the
	// encoder put on the channel for it.
	StreamBytes  int64 `json:"stream_bytes"`
	EncodedBytes int64 `json:"encoded_bytes"`
	// Writes are NBD_CMD_WRITE requests, PayloadBytes their data.
	Writes       int64 `json:"writes"`
	PayloadBytes int64 `json:"payload_bytes"`
	Zero         Count `json:"zero"`
	Ref          Count `json:"ref"`
	LZ4          Count `json:"lz4"`
	Deflate      Count `json:"deflate"`
	Raw          Count `json:"raw"`
	// PassthroughBytes are client bytes carried as they are: the
	// handshake, request headers other than writes', payloads of other
	// commands, and everything after a fallback.
	PassthroughBytes int64 `json:"passthrough_bytes"`
	// Fallback says why an encoder stopped parsing and passed the rest of
	// its stream through (empty: none did).
	Fallback string `json:"fallback,omitempty"`
	// AnnouncedKeys are the keys the dest ends announced; Unit the last
	// reference unit announced (0: no index).
	AnnouncedKeys int64 `json:"announced_keys"`
	Unit          int   `json:"unit"`
	// EncodeCPU and DecodeCPU are the CPU time of the encoders and, in
	// this process, the decoders (their threads', reads and writes
	// included).
	EncodeCPU   time.Duration `json:"-"`
	EncodeCPUMs float64       `json:"encode_cpu_ms"`
	DecodeCPU   time.Duration `json:"-"`
	DecodeCPUMs float64       `json:"decode_cpu_ms"`
	// DecodedBytes are what the decoders wrote to the NBD servers;
	// RefsResolved the references they read from their index.
	DecodedBytes int64 `json:"decoded_bytes"`
	RefsResolved int64 `json:"refs_resolved"`
}

func (s *Stats) add(b Stats) {
	s.Channels += b.Channels
	s.StreamBytes += b.StreamBytes
	s.EncodedBytes += b.EncodedBytes
	s.Writes += b.Writes
	s.PayloadBytes += b.PayloadBytes
	s.Zero.add(b.Zero)
	s.Ref.add(b.Ref)
	s.LZ4.add(b.LZ4)
	s.Deflate.add(b.Deflate)
	s.Raw.add(b.Raw)
	s.PassthroughBytes += b.PassthroughBytes
	if b.Fallback != "" {
		s.Fallback = b.Fallback
	}
	s.AnnouncedKeys += b.AnnouncedKeys
	if b.Unit != 0 {
		s.Unit = b.Unit
	}
	s.EncodeCPU += b.EncodeCPU
	s.DecodeCPU += b.DecodeCPU
	s.DecodedBytes += b.DecodedBytes
	s.RefsResolved += b.RefsResolved
}

func (s *Stats) finish() {
	s.EncodeCPUMs = float64(s.EncodeCPU.Microseconds()) / 1000
	s.DecodeCPUMs = float64(s.DecodeCPU.Microseconds()) / 1000
}
