package blockcodec_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/pierrec/lz4/v4"

	"github.com/vmigrate/vmigrate/blockcodec"
	"github.com/vmigrate/vmigrate/blockcodec/blockcodectest"
)

// The fuzz targets hold the codec to doc.go on untrusted bytes (STYLE.md
// rule 8): the decoder and the announcement reader never panic, fail only
// with their typed errors, and allocate within their bounds; whatever
// NBD client stream goes in, the decoder gives it back byte for byte.
// The seed corpus runs with the tests:
//
//	go test -run Fuzz ./blockcodec
//	go test -run '^$' -fuzz FuzzDecode -fuzztime 20s ./blockcodec

// fuzzFixture is the destination's image and its indexes, the same in
// every run so that the seeds' references resolve.
type fuzzFixture struct {
	image  []byte // 64 KiB: units of 4 KiB, random and text in turn
	ix4096 *blockcodectest.Index
	ix512  *blockcodectest.Index // the same image in units of 512
	fail   *blockcodectest.Index // ix4096's blocks, but Read fails
	lie    *blockcodectest.Index // ix4096's blocks, but Read lies
	noise  []byte                // 1 MiB of random bytes
}

var fixture = sync.OnceValue(func() *fuzzFixture {
	rng := rand.New(rand.NewPCG(11, 12))
	x := &fuzzFixture{}
	for i := range 16 {
		if i%2 == 0 {
			x.image = append(x.image, incompressible(rng, 4096)...)
		} else {
			x.image = append(x.image, compressible(rng, 4096)...)
		}
	}
	x.ix4096 = blockcodectest.NewIndex(4096)
	x.ix4096.Add(x.image)
	x.ix512 = blockcodectest.NewIndex(512)
	x.ix512.Add(x.image)
	x.fail, x.lie = blockcodectest.NewIndex(4096), blockcodectest.NewIndex(4096)
	x.fail.Add(x.image)
	x.lie.Add(x.image)
	x.fail.Fail, x.lie.Lie = true, true
	x.noise = incompressible(rng, 1<<20)
	return x
})

// index is the fixture's index of unit (4096 or 512), nil for 0.
func (x *fuzzFixture) index(unit int) *blockcodectest.Index {
	switch unit {
	case 4096:
		return x.ix4096
	case 512:
		return x.ix512
	}
	return nil
}

// compressible is text-like: words of a small vocabulary.
func compressible(rng *rand.Rand, n int) []byte {
	words := strings.Fields("block mirror disk write flush the of to a and destination tunnel NBD QEMU migration if err != nil { return }")
	b := make([]byte, 0, n+16)
	for len(b) < n {
		b = append(b, words[rng.IntN(len(words))]...)
		b = append(b, " \n\t"[rng.IntN(3)])
	}
	return b[:n]
}

// incompressible is random bytes.
func incompressible(rng *rand.Rand, n int) []byte {
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
	}
	return b[:n]
}

// announcement is what a dest end with index ix (nil: none) announces.
func announcement(tb testing.TB, ix blockcodec.Neighbours) []byte {
	tb.Helper()
	c, err := blockcodec.New(blockcodec.Config{Index: ix})
	if err != nil {
		tb.Fatal(err)
	}
	var b bytes.Buffer
	if err := c.DestEnd().ToPeer(&b, bytes.NewReader(nil)); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

// encodeFor encodes client as a source end of cfg whose dest end
// announced ann (nil: no announcement, the Encode of a codec with no
// peer index). It runs both directions in turn: the announcement is read
// before the encoder's first write waits for it.
func encodeFor(tb testing.TB, cfg blockcodec.Config, ann, client []byte) ([]byte, blockcodec.Stats) {
	tb.Helper()
	c, err := blockcodec.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	var out bytes.Buffer
	if ann == nil {
		err = c.Encode(&out, bytes.NewReader(client))
	} else {
		se := c.SourceEnd()
		if err := se.ToLocal(io.Discard, bytes.NewReader(ann)); err != nil {
			tb.Fatalf("announcement: %v", err)
		}
		err = se.ToPeer(&out, bytes.NewReader(client))
	}
	if err != nil {
		tb.Fatalf("encode: %v", err)
	}
	return out.Bytes(), c.Stats()
}

// allocated is how many bytes f allocated (with what else ran meanwhile,
// which in a fuzz worker is little).
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// Decoder memory (doc.go: "a unit and two groups past its buffers"):
// decodeFixed covers its two 256 KiB buffers, the DEFLATE state and error
// text with room to spare, plus the largest unit and both groups. Buffers
// are kept and regrown to the largest group so far, so a stream of ever
// larger groups reallocates; each needs at least 1/1032 of its size in
// input (DEFLATE's best ratio), hence the term per input byte.
var decodeFixed = uint64(1<<20 + blockcodec.MaxUnit + blockcodec.MaxBlockSize + lz4.CompressBlockBound(blockcodec.MaxBlockSize))

const decodePerInputByte = 1100

// sink counts what it is given, hashes the first sinkHashed bytes of it,
// and fails past limit bytes: a few input bytes of zero records make
// 32 MiB of output, which hashing would make the fuzzer's slowest input.
type sink struct {
	crc   uint32
	n     int64
	limit int64
}

const sinkHashed = 1 << 20

var errSinkFull = errors.New("fuzz sink full")

func (s *sink) Write(p []byte) (int, error) {
	var err error
	if room := s.limit - s.n; int64(len(p)) > room {
		p, err = p[:room], errSinkFull
	}
	if s.n < sinkHashed {
		s.crc = crc32.Update(s.crc, crc32.IEEETable, p[:min(int64(len(p)), sinkHashed-s.n)])
	}
	s.n += int64(len(p))
	return len(p), err
}

// decodeIndex is the index FuzzDecode's mode gives the decoder.
func decodeIndex(mode uint8) blockcodec.Neighbours {
	x := fixture()
	switch mode % 5 {
	case 0:
		return x.ix4096
	case 1:
		return x.ix512
	case 3:
		return x.fail
	case 4:
		return x.lie
	}
	return nil
}

// FuzzDecode feeds arbitrary bytes to the decoder, as the encoded stream
// of a channel, with an index chosen by mode (4 KiB units, 512-byte
// units, none, one that fails, one that lies). The decoder must not
// panic, must end with nil or a *CorruptError whose offset lies in the
// input (or the sink's own error), must allocate within its bound, and
// must decode the same whatever the input's read sizes. Seeds: streams
// the encoder made of each kind of record, and broken ones.
func FuzzDecode(f *testing.F) {
	for _, s := range decodeSeeds(f) {
		f.Add(s.mode, s.data)
	}
	f.Fuzz(func(t *testing.T, mode uint8, data []byte) {
		ix := decodeIndex(mode)
		decode := func(r io.Reader) (*sink, blockcodec.Stats, error) {
			c, err := blockcodec.New(blockcodec.Config{Index: ix})
			if err != nil {
				t.Fatal(err)
			}
			out := &sink{limit: blockcodec.MaxPayload + 1<<20}
			err = c.Decode(out, r)
			return out, c.Stats(), err
		}
		var (
			out *sink
			st  blockcodec.Stats
			err error
		)
		n := allocated(func() { out, st, err = decode(bytes.NewReader(data)) })
		if bound := decodeFixed + decodePerInputByte*uint64(len(data)); n > bound {
			t.Fatalf("decoding %d bytes allocated %d bytes, bound %d (err %v)", len(data), n, bound, err)
		}
		full := errors.Is(err, errSinkFull)
		var ce *blockcodec.CorruptError
		switch {
		case err == nil:
			if st.DecodedBytes != out.n {
				t.Fatalf("stats say %d bytes decoded, the sink got %d", st.DecodedBytes, out.n)
			}
		case errors.As(err, &ce):
			if ce.Offset < 0 || ce.Offset > int64(len(data)) || ce.Reason == "" {
				t.Fatalf("corrupt error at %d of %d bytes: %v", ce.Offset, len(data), err)
			}
		case full, errors.Is(err, io.ErrUnexpectedEOF):
		default:
			t.Fatalf("decode: %T %v: want a *CorruptError", err, err)
		}
		if full || len(data) > 32<<10 {
			// Where a full sink stops depends on the buffering; large
			// inputs would make short reads slow.
			return
		}
		// Short reads put the edges of the decoder's buffer everywhere.
		out1, _, err1 := decode(&shortReader{r: bytes.NewReader(data)})
		if errors.Is(err1, errSinkFull) {
			return
		}
		var ce1 *blockcodec.CorruptError
		if errors.As(err, &ce) != errors.As(err1, &ce1) || ce != nil && *ce != *ce1 || (err == nil) != (err1 == nil) {
			t.Fatalf("decode: %v; with short reads: %v", err, err1)
		}
		// After an error, how much was written first depends on when the
		// decoder flushed; a stream it accepts gives the same bytes.
		if err == nil && (out.n != out1.n || out.crc != out1.crc) {
			t.Fatalf("decode gave %d bytes (crc %08x), with short reads %d (crc %08x)", out.n, out.crc, out1.n, out1.crc)
		}
	})
}

// shortReader reads 1, 2, 3, ... 13 bytes at a time, over and over.
type shortReader struct {
	r *bytes.Reader
	i int
}

func (s *shortReader) Read(p []byte) (int, error) {
	s.i = s.i%13 + 1
	return s.r.Read(p[:min(len(p), s.i)])
}

type decodeSeed struct {
	mode uint8
	data []byte
}

// decodeSeeds are encoded streams of every record kind, from the
// encoder, and hand-broken ones.
func decodeSeeds(tb testing.TB) []decodeSeed {
	x := fixture()
	rng := rand.New(rand.NewPCG(21, 22))
	text := compressible(rng, 6<<10)
	ann4096, ann512 := announcement(tb, x.ix4096), announcement(tb, x.ix512)
	handshake := func(extended bool) *blockcodectest.Stream {
		return (&blockcodectest.Stream{Extended: extended}).Handshake("vda")
	}
	flush := func(s *blockcodectest.Stream) *blockcodectest.Stream {
		return s.Request(blockcodectest.CmdFlush, 0, 0, 0)
	}
	enc := func(cfg blockcodec.Config, ann []byte, s *blockcodectest.Stream) []byte {
		b, _ := encodeFor(tb, cfg, ann, s.Disc().B)
		return b
	}
	valid := []decodeSeed{
		{2, enc(blockcodec.Config{}, nil, flush(handshake(false)))},
		{2, enc(blockcodec.Config{}, nil, handshake(false).Write(0, make([]byte, 12<<10)))},
		{2, enc(blockcodec.Config{}, nil, handshake(false).Write(100, text))},
		{2, enc(blockcodec.Config{BlockSize: 4096, Deflate: true}, nil, handshake(true).Write(0, text))},
		{2, enc(blockcodec.Config{BlockSize: 4096}, nil, handshake(false).Write(0, x.noise[:2000]))},
		{0, enc(blockcodec.Config{}, ann4096, flush(handshake(false).Write(0, x.image[:8<<10])))},
		{1, enc(blockcodec.Config{}, ann512, handshake(true).Write(512, x.image[512:4096]))},
		{0, enc(blockcodec.Config{BlockSize: 4096}, ann4096, handshake(true).
			Write(4096, append(append(append(make([]byte, 5000), x.image[8192:12288]...), text[:1000]...), x.noise[:1000]...)).
			Request(blockcodectest.CmdBlockStatus, blockcodectest.FlagPayloadLen, 0, 3))},
		{3, enc(blockcodec.Config{}, ann4096, handshake(false).Write(0, x.image[:4096]))},
		{4, enc(blockcodec.Config{}, ann4096, handshake(false).Write(0, x.image[:4096]))},
		// A stream the encoder fell back on: literals only.
		{2, enc(blockcodec.Config{}, nil, &blockcodectest.Stream{B: []byte("\x00\x00\x00\x03\x16\x03\x01 a TLS hello")})},
	}
	seeds := append([]decodeSeed(nil), valid...)
	// The same streams, cut and with a byte flipped in the middle.
	for _, s := range valid[:8] {
		seeds = append(seeds, decodeSeed{s.mode, s.data[:len(s.data)/2]})
		b := bytes.Clone(s.data)
		b[len(b)*2/3] ^= 0x40
		seeds = append(seeds, decodeSeed{s.mode, b})
	}
	w := func(length uint32) string { // a simple write header
		h := binary.BigEndian.AppendUint32(nil, 0x25609513)
		h = binary.BigEndian.AppendUint16(h, 0)
		h = binary.BigEndian.AppendUint16(h, blockcodectest.CmdWrite)
		h = append(h, make([]byte, 16)...)
		return string(binary.BigEndian.AppendUint32(h, length))
	}
	for _, s := range []string{
		"", "VMBC", "VMBC\x02", "VMBX\x01", "VMBC\x01",
		"VMBC\x01\x01\x00",                   // empty literal
		"VMBC\x01\x01\x81\x80\x40abc",        // literal past 1 MiB
		"VMBC\x01\x01\x05ab",                 // literal cut
		"VMBC\x01\x07",                       // unknown operation
		"VMBC\x01\x02\x80\x20\x02\x80\x20",   // a second unit
		"VMBC\x01\x02\x80\x04",               // a unit that is not the index's
		"VMBC\x01\x03" + w(100) + "\x10\x64", // zero record
		"VMBC\x01\x03" + w(100) + "\x10\x65", // zero record past the write
		"VMBC\x01\x03" + w(10) + "\x14\x0a0123456789",
		"VMBC\x01\x03" + w(10) + "\x14\x05012\x10\x05",                             // cut raw record
		"VMBC\x01\x03" + w(4096) + "\x11" + strings.Repeat("\xab", 32),             // ref without a unit
		"VMBC\x01\x02\x80\x20\x03" + w(4096) + "\x11" + strings.Repeat("\xab", 32), // unknown ref
		"VMBC\x01\x03" + w(0) + "\x10\x00",                                         // an empty write
		"VMBC\x01\x03" + w(64) + "\x12\x40\x03\x10\x61\x00",                        // lz4 that gives too little
		"VMBC\x01\x03" + w(64) + "\x13\x40\x05\x4a\x4c\x84\x11\x00",                // deflate
		"VMBC\x01\x03" + w(32<<20) + "\x10\x80\x80\x80\x10",                        // 32 MiB of zeros
		"VMBC\x01\x03" + w(32<<20) + "\x12\x80\x80\x40\x80\x80\x40" + "xyz",        // a 1 MiB group, cut
		"VMBC\x01\x03" + w(32<<20) + "\x13\x80\x80\x40\x05\x63\x60\x18\x05\x00",    // deflate of 1 MiB that ends early
		"VMBC\x01\x03" + w(16) + "\x15",                                            // unknown record
		"VMBC\x01\x03\x25\x60\x95\x13\x00\x00\x00\x00",                             // a write that is a read
	} {
		for _, mode := range []uint8{0, 2} {
			seeds = append(seeds, decodeSeed{mode, []byte(s)})
		}
	}
	return seeds
}

// roundTripScript turns a fuzzer's script into an NBD client stream of
// writes and other requests, with unit as the alignment of offsets and
// of indexed pieces. Each operation is a byte (low 3 bits: what; 0x08:
// misalign the offset; 0x10: pieces 16 times longer; 0x20: FUA; 0x40:
// pieces a multiple of unit) and its arguments. A write is 1 to 4
// pieces, each a kind (zero, blocks of the index's image, text, random,
// the script's own bytes) and a length. It returns the stream and its
// write payload bytes.
func roundTripScript(extended bool, unit int, script []byte) ([]byte, int64) {
	x := fixture()
	rng := rand.New(rand.NewPCG(31, 32))
	sc := &scriptReader{b: script}
	s := (&blockcodectest.Stream{Extended: extended}).Handshake("vda")
	var payload int64
	for ops := 0; len(sc.b) > 0 && ops < 32 && payload < 4<<20; ops++ {
		op := sc.byte()
		from := uint64(sc.u16()) * uint64(unit)
		if op&0x08 != 0 {
			from += uint64(sc.u16()) % uint64(unit)
		}
		switch op & 7 {
		case 0, 1, 2, 3:
			var p []byte
			for range 1 + sc.byte()%4 {
				n := 1 + sc.u16()
				if op&0x10 != 0 {
					n *= 16
				}
				if op&0x40 != 0 {
					n = (n + unit - 1) / unit * unit
				}
				switch sc.byte() % 5 {
				case 0:
					p = append(p, make([]byte, n)...)
				case 1: // whole units of the image, from a unit's start
					at := int(sc.byte()) % (len(x.image) / unit) * unit
					for n > 0 {
						k := min(n, len(x.image)-at)
						p = append(p, x.image[at:at+k]...)
						n, at = n-k, 0
					}
				case 2:
					p = append(p, compressible(rng, n)...)
				case 3:
					p = append(p, incompressible(rng, n)...)
				case 4:
					k := max(1, min(n, len(sc.b)))
					p = append(p, sc.take(k)...)
				}
			}
			var flags uint16
			if op&0x20 != 0 {
				flags = 1 // NBD_CMD_FLAG_FUA
			}
			s.Request(blockcodectest.CmdWrite, flags, from, uint64(len(p)))
			s.B = append(s.B, p...)
			payload += int64(len(p))
		case 4:
			s.Request(blockcodectest.CmdFlush, 0, 0, 0)
		case 5:
			s.Request([]uint16{blockcodectest.CmdTrim, blockcodectest.CmdRead, blockcodectest.CmdBlockStatus}[sc.byte()%3], 0, from, uint64(sc.u16())*512)
		case 6:
			if extended { // a command other than a write with a payload
				p := sc.take(int(sc.byte()))
				s.Request(blockcodectest.CmdBlockStatus, blockcodectest.FlagPayloadLen, from, uint64(len(p)))
				s.B = append(s.B, p...)
			} else {
				s.Disc()
			}
		case 7:
			s.Request(blockcodectest.CmdWrite, 0, from, 0) // no payload
		}
	}
	return s.Disc().B, payload
}

// scriptReader gives a script's bytes, then zeros.
type scriptReader struct{ b []byte }

func (s *scriptReader) byte() byte {
	if len(s.b) == 0 {
		return 0
	}
	c := s.b[0]
	s.b = s.b[1:]
	return c
}

func (s *scriptReader) u16() int { return int(s.byte())<<8 | int(s.byte()) }

func (s *scriptReader) take(n int) []byte {
	n = min(n, len(s.b))
	p := s.b[:n]
	s.b = s.b[n:]
	if len(p) == 0 {
		return []byte{0x5a}
	}
	return p
}

// Round-trip settings, the bits of FuzzRoundTrip's cfg.
const (
	rtDeflate   = 1 << 0
	rtBlockMask = 3 << 1 // BlockSize: default, 4 KiB, 16 KiB, 1 MiB
	rtIndexMask = 3 << 3 // no announcement; dest index of 4 KiB units; of 512; dest without index
	rtCut       = 1 << 5 // cut the client stream at cut/65536 of its length
	rtJunk      = 1 << 6 // then append bytes that are not NBD
)

// FuzzRoundTrip encodes NBD client streams built from the fuzzer's
// script (see roundTripScript) under the codec settings in cfg, and
// decodes them: the NBD server must get exactly what the client sent.
// Streams the encoder can parse must also be counted right. Streams cut
// short or followed by junk go through the fallback and must still come
// out unchanged.
func FuzzRoundTrip(f *testing.F) {
	for _, s := range []struct {
		extended bool
		cfg      uint8
		cut      uint16
		script   []byte
	}{
		// One write of 64 KiB of zeros at offset 0.
		{false, 0, 0, []byte{0x00, 0, 0, 0, 0xff, 0xff, 0}},
		// Text, then random, at unit 7, with DEFLATE and 4 KiB groups.
		{false, rtDeflate | 1<<1, 0, []byte{0x01, 0, 7, 1, 0x20, 0, 2, 0x10, 0, 3}},
		// Blocks of the image, aligned, with the 4 KiB index: references.
		{false, 1 << 3, 0, []byte{0x40, 0, 2, 0, 0x40, 0, 1, 3, 0x04}},
		// The same, misaligned by 1000 bytes: no references.
		{true, 1 << 3, 0, []byte{0x48, 0, 2, 0x03, 0xe8, 0, 0x40, 0, 1, 3}},
		// The 512-byte index: zero, image, text, script bytes in one write.
		{true, 2 << 3, 0, []byte{0x43, 0, 9, 3, 0x02, 0, 0, 0x10, 0, 1, 5, 0x01, 0, 2, 0x00, 0x20, 4, 'a', 'b', 'c'}},
		// Large pieces (16x), 1 MiB groups, a dest without index.
		{false, 3<<1 | 3<<3, 0, []byte{0x13, 0, 0, 1, 0x40, 0, 3, 0x40, 0, 0, 0x04, 0, 0}},
		// Requests that are not writes, and an empty write.
		{true, 1 << 3, 0, []byte{0x04, 0, 0, 0x05, 0, 9, 0, 0, 8, 0x06, 0, 1, 5, 'h', 'e', 'l', 'l', 'o', 0x07, 0, 3, 0x00, 0, 1, 0, 0, 100, 2}},
		// Cut in the middle of a write's payload, then junk.
		{false, 1<<3 | rtCut, 0x9000, []byte{0x40, 0, 2, 1, 0x40, 0, 1, 3}},
		{true, rtJunk, 0, []byte{0x00, 0, 0, 0, 0x10, 0, 3}},
		{false, 2<<3 | rtCut | rtJunk, 0x0100, []byte{0x08, 0, 1, 0, 9, 1, 0x01, 0, 1}},
	} {
		f.Add(s.extended, s.cfg, s.cut, s.script)
	}
	f.Fuzz(func(t *testing.T, extended bool, cfg uint8, cut uint16, script []byte) {
		x := fixture()
		ccfg := blockcodec.Config{
			Deflate:   cfg&rtDeflate != 0,
			BlockSize: []int{0, 4096, 16384, 1 << 20}[cfg&rtBlockMask>>1],
		}
		var (
			ann  []byte
			unit = 4096
			ix   *blockcodectest.Index
		)
		switch cfg & rtIndexMask >> 3 {
		case 1:
			ix = x.ix4096
		case 2:
			ix, unit = x.ix512, 512
		case 3:
			ann = announcement(t, nil)
		}
		if ix != nil {
			ann = announcement(t, ix)
		}
		client, payload := roundTripScript(extended, unit, script)
		whole := true
		if cfg&rtCut != 0 {
			client, whole = client[:len(client)*int(cut)/65536], false
		}
		if cfg&rtJunk != 0 {
			client, whole = append(client, "\x16\x03\x01\x02\x00 not NBD"...), false
		}

		enc, st := encodeFor(t, ccfg, ann, client)
		var dcfg blockcodec.Config
		if ix != nil { // not a nil *Index in the interface
			dcfg.Index = ix
		}
		dc, err := blockcodec.New(dcfg)
		if err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		if err := dc.Decode(&got, bytes.NewReader(enc)); err != nil {
			t.Fatalf("decode: %v", err)
		}
		if !bytes.Equal(got.Bytes(), client) {
			t.Fatalf("the server got %d bytes, the client sent %d; they differ at byte %d", got.Len(), len(client), commonPrefix(got.Bytes(), client))
		}
		ds := dc.Stats()
		if st.StreamBytes != int64(len(client)) || st.EncodedBytes != int64(len(enc)) || ds.DecodedBytes != int64(len(client)) {
			t.Fatalf("stream %d, encoded %d, decoded %d bytes; want %d, %d, %d", st.StreamBytes, st.EncodedBytes, ds.DecodedBytes, len(client), len(enc), len(client))
		}
		if !whole {
			return
		}
		if st.Fallback != "" {
			t.Fatalf("fallback on a well-formed stream: %s", st.Fallback)
		}
		covered := st.Zero.Bytes + st.Ref.Bytes + st.LZ4.Bytes + st.Deflate.Bytes + st.Raw.Bytes
		if st.PayloadBytes != payload || covered != payload {
			t.Fatalf("%d payload bytes counted, records cover %d, want %d", st.PayloadBytes, covered, payload)
		}
		if ds.RefsResolved != st.Ref.Blocks || ix == nil && st.Ref.Blocks != 0 {
			t.Fatalf("%d references sent, %d resolved", st.Ref.Blocks, ds.RefsResolved)
		}
	})
}

func commonPrefix(a, b []byte) int {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return i
}

// FuzzAnnouncement feeds arbitrary bytes to a source end as the dest
// end's reverse stream. Reading the announcement must not panic, must
// fail only with an *AnnounceError and pass nothing on then, must
// allocate with the keys it read and not with the count it was told,
// and, once it succeeds, must pass the rest on unchanged. The encoder
// must then take whatever keys were announced: a stream with a write of
// whole units still decodes exactly. Seeds: announcements of the
// fixture's indexes (so references flow), followed by server bytes, and
// broken ones.
func FuzzAnnouncement(f *testing.F) {
	x := fixture()
	replies := "NBDMAGIC" + "IHAVEOPT" + "\x00\x03"
	for _, a := range [][]byte{announcement(f, x.ix4096), announcement(f, x.ix512), announcement(f, nil)} {
		f.Add(a)
		f.Add(append(bytes.Clone(a), replies...))
		f.Add(a[:len(a)-1])
	}
	for _, s := range []string{
		"", "VMBA", "VMBX\x01\x00\x00", "VMBA\x02\x00\x00", "VMBA\x01\x00\x01\x05",
		"VMBA\x01\x80\x02\x00", "VMBA\x01\x81\x20\x00", "VMBA\x01\x80\x80\x40\x00", "VMBA\x01\x80\x80\x80\x01\x00",
		"VMBA\x01\x80\x20\x81\x80\x80\x80\x01",                             // more than 2^28 keys
		"VMBA\x01\x80\x20\x80\x80\x80\x80\x01\x05\x01",                     // 2^28 keys told, 2 sent
		"VMBA\x01\x80\x20\x02\x05\x00",                                     // out of order
		"VMBA\x01\x80\x20\x02\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01\x01", // the largest key, then past it
		"VMBA\x01\x80\x20\x03\x00\x01\x01" + replies,
		"VMBA\x01\x80\x80\x40\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", // 1 MiB units
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := blockcodec.New(blockcodec.Config{})
		if err != nil {
			t.Fatal(err)
		}
		se := c.SourceEnd()
		var rest bytes.Buffer
		n := allocated(func() { err = se.ToLocal(&rest, bytes.NewReader(data)) })
		// Its 64 KiB reader, the first 2^16 keys' room, then per key
		// read (a byte or more of input each): the key, the slice's
		// growth and the lookup table.
		if bound := uint64(1<<20 + 64*len(data)); n > bound {
			t.Fatalf("reading %d bytes allocated %d bytes, bound %d (err %v)", len(data), n, bound, err)
		}
		if err != nil {
			var ae *blockcodec.AnnounceError
			if !errors.As(err, &ae) {
				t.Fatalf("announcement: %T %v: want an *AnnounceError", err, err)
			}
			if rest.Len() != 0 {
				t.Fatalf("a refused announcement passed %d bytes on", rest.Len())
			}
			return
		}
		if head := len(data) - rest.Len(); head < 7 || !bytes.Equal(rest.Bytes(), data[head:]) {
			t.Fatalf("announcement of %d bytes of %d, the rest passed on is not the input's tail", head, len(data))
		}
		unit, _ := binary.Uvarint(data[5:])
		// Units of the image, then of noise up to the announced unit:
		// every one is looked up among the keys.
		s := (&blockcodectest.Stream{}).Handshake("vda").Write(0, x.image)
		if unit > uint64(len(x.image)) {
			s.Write(unit, x.noise[:unit])
		}
		client := s.Disc().B
		var enc bytes.Buffer
		if err := se.ToPeer(&enc, bytes.NewReader(client)); err != nil {
			t.Fatalf("encode after the announcement: %v", err)
		}
		var ix blockcodec.Neighbours
		if fx := x.index(int(unit)); fx != nil {
			ix = fx
		} else if unit != 0 {
			ix = blockcodectest.NewIndex(int(unit))
		}
		dc, err := blockcodec.New(blockcodec.Config{Index: ix})
		if err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		if err := dc.Decode(&got, &enc); err != nil {
			t.Fatalf("decode after an announcement of unit %d: %v", unit, err)
		}
		if !bytes.Equal(got.Bytes(), client) {
			t.Fatalf("the server got %d bytes, the client sent %d", got.Len(), len(client))
		}
	})
}
