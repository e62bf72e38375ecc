package pagecodec_test

import (
	"bytes"

	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/vmigrate/vmigrate/migstream"
	"github.com/vmigrate/vmigrate/migstream/migstreamtest"
	"github.com/vmigrate/vmigrate/pagecodec"
)

const ps = migstream.PageSize

// roundTrip encodes in, decodes the result and checks it is in again.
func roundTrip(t testing.TB, in []byte, cfg pagecodec.Config) (enc []byte, st pagecodec.Stats) {
	t.Helper()
	c := pagecodec.New(cfg)
	var e, d bytes.Buffer
	if err := c.Encode(&e, bytes.NewReader(in)); err != nil {
		t.Fatalf("encode: %v", err)
	}
	if err := c.Decode(&d, bytes.NewReader(e.Bytes())); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if !bytes.Equal(d.Bytes(), in) {
		i := 0
		for i < min(d.Len(), len(in)) && d.Bytes()[i] == in[i] {
			i++
		}
		t.Fatalf("decoded stream differs from the input at byte %d (%d bytes, want %d)", i, d.Len(), len(in))
	}
	return e.Bytes(), c.Stats()
}

// guest is a synthetic guest's memory: pages of text, binary, random and
// zero contents, some duplicated, that passes re-send with a few bytes
// changed.
type guest struct {
	rng   *rand.Rand
	pages [][]byte
}

func textPage(rng *rand.Rand) []byte {
	words := strings.Fields("func return if err != nil the page of a migration stream QEMU sends over the tunnel to its destination host")
	var b bytes.Buffer
	for b.Len() < ps {
		b.WriteString(words[rng.IntN(len(words))])
		b.WriteByte(" \n\t"[rng.IntN(3)])
	}
	return b.Bytes()[:ps]
}

func binaryPage(rng *rand.Rand) []byte {
	p := make([]byte, ps)
	for i := 0; i < ps; i += 8 {
		// Instruction-like: small opcodes, many zero bytes, repeating.
		p[i] = byte(0x48 + rng.IntN(4))
		p[i+1] = byte(0x89 + rng.IntN(3))
		p[i+2] = byte(rng.IntN(16))
		if rng.IntN(3) == 0 {
			p[i+4] = byte(rng.IntN(256))
		}
	}
	return p
}

func randomPage(rng *rand.Rand) []byte {
	p := make([]byte, ps)
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
	return p
}

func newGuest(n int, seed uint64) *guest {
	g := &guest{rng: rand.New(rand.NewPCG(seed, 1))}
	for i := range n {
		var p []byte
		switch i % 5 {
		case 0:
			p = make([]byte, ps)
		case 1:
			p = textPage(g.rng)
		case 2:
			p = binaryPage(g.rng)
		case 3:
			p = randomPage(g.rng)
		default:
			p = bytes.Clone(g.pages[g.rng.IntN(len(g.pages))]) // a duplicate
		}
		g.pages = append(g.pages, p)
	}
	return g
}

// dirty changes a few bytes in k random pages and returns their numbers.
func (g *guest) dirty(k int) []int {
	var out []int
	for range k {
		i := g.rng.IntN(len(g.pages))
		for range 1 + g.rng.IntN(4) {
			g.pages[i][g.rng.IntN(ps)] ^= byte(1 + g.rng.IntN(255))
		}
		out = append(out, i)
	}
	return out
}

// stream is a migration of g: a full first pass (zero pages as QEMU's ZERO
// records), passes of dirtied pages, an END, device state.
func (g *guest) stream(passes, dirty int) []byte {
	b := migstreamtest.NewBuilder().Start(migstreamtest.Blocks(uint64(len(g.pages)))...)
	b.Part()
	for i, p := range g.pages {
		if bytes.Equal(p, make([]byte, ps)) {
			b.Zero("pc.ram", uint64(i))
		} else {
			b.Page("pc.ram", uint64(i), p)
		}
	}
	b.Page("pc.bios", 1, textPage(g.rng)).EOS()
	for range passes {
		b.Part()
		for _, i := range g.dirty(dirty) {
			b.Page("pc.ram", uint64(i), g.pages[i])
		}
		b.EOS()
	}
	b.End()
	for _, i := range g.dirty(dirty / 4) {
		b.Page("pc.ram", uint64(i), g.pages[i])
	}
	return b.EOS().DeviceState(5000).Bytes()
}

func TestRoundTripGuest(t *testing.T) {
	g := newGuest(2000, 1)
	in := g.stream(6, 400)
	enc, st := roundTrip(t, in, pagecodec.Config{Effort: pagecodec.EffortLZ4})
	p := st.Pages
	t.Logf("stream %d bytes, encoded %d (%.1f%%): %+v zero records %+v", len(in), len(enc), 100*float64(len(enc))/float64(len(in)), p, st.ZeroRecords)
	if p.Delta.Pages < 6*300 || p.Ref.Pages < 300 || p.LZ4.Pages < 600 || p.Raw.Pages < 300 || st.ZeroRecords.Pages < 400 {
		t.Errorf("encodings not all used as expected: %+v, zero records %+v", p, st.ZeroRecords)
	}
	if p.Delta.Bytes > p.Delta.Pages*40 {
		t.Errorf("deltas of a few changed bytes cost %d bytes each", p.Delta.Bytes/p.Delta.Pages)
	}
	if st.StreamBytes != int64(len(in)) || st.EncodedBytes != int64(len(enc)) {
		t.Errorf("stats count %d in / %d out, want %d / %d", st.StreamBytes, st.EncodedBytes, len(in), len(enc))
	}
	if st.Passthrough != "device state" || st.CacheMaxBytes != pagecodec.DefaultCacheMin {
		t.Errorf("passthrough %q, cache %d", st.Passthrough, st.CacheMaxBytes)
	}
}

// A cache far smaller than the guest evicts all the time; the rebuild
// stays exact and deltas get rarer.
func TestRoundTripSmallCache(t *testing.T) {
	g := newGuest(1500, 2)
	in := g.stream(5, 500)
	_, big := roundTrip(t, in, pagecodec.Config{Effort: pagecodec.EffortLZ4})
	_, small := roundTrip(t, in, pagecodec.Config{CacheBytes: 64 * ps, Effort: pagecodec.EffortLZ4})
	if small.CacheEvictions == 0 || small.CacheMaxBytes != 64*ps || small.CacheBytes > 256*ps {
		t.Errorf("small cache: %d evictions, max %d, used %d", small.CacheEvictions, small.CacheMaxBytes, small.CacheBytes)
	}
	if small.Pages.Delta.Pages >= big.Pages.Delta.Pages/4 {
		t.Errorf("deltas with a 64-page cache %d, with a big one %d", small.Pages.Delta.Pages, big.Pages.Delta.Pages)
	}
}

// The codec passes what it does not rework (QEMU's XBZRLE, non-zero fills,
// the stream of another program entirely) and still rebuilds exactly.
func TestRoundTripPassThrough(t *testing.T) {
	zeroFill := migstreamtest.NewBuilder().Start(migstreamtest.Blocks(8)...).Part().
		Page("pc.ram", 1, textPage(rand.New(rand.NewPCG(1, 1)))).Bytes()
	zeroFill = append(zeroFill, 0, 0, 0, 0, 0, 0, 0x10, migstream.FlagZero|migstream.FlagContinue, 0x7f) // fill 0x7f
	zeroFill = append(zeroFill, migstreamtest.NewBuilder().EOS().Bytes()[len(migstreamtest.NewBuilder().Bytes()):]...)
	for name, in := range map[string][]byte{
		"xbzrle": migstreamtest.NewBuilder().Start(migstreamtest.Blocks(8)...).Part().
			Page("pc.ram", 1, textPage(rand.New(rand.NewPCG(1, 1)))).XBZRLE("pc.ram", 1, []byte{0, 2, 1, 2}).
			Page("pc.ram", 1, textPage(rand.New(rand.NewPCG(1, 2)))).EOS().Bytes(),
		"nonzero fill": zeroFill,
		"not qemu":     []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"empty":        nil,
		"truncated":    newGuest(50, 3).stream(1, 10)[:30000],
	} {
		t.Run(name, func(t *testing.T) { roundTrip(t, in, pagecodec.Config{}) })
	}
}

func TestRoundTripChunkedIO(t *testing.T) {
	in := newGuest(300, 4).stream(3, 100)
	c := pagecodec.New(pagecodec.Config{})
	var e, d bytes.Buffer
	if err := c.Encode(&e, iotest.OneByteReader(bytes.NewReader(in))); err != nil {
		t.Fatal(err)
	}
	if err := c.Decode(&d, iotest.HalfReader(bytes.NewReader(e.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(d.Bytes(), in) {
		t.Fatal("decoded stream differs")
	}
}

func TestDecoderRejectsCorruptStreams(t *testing.T) {
	in := newGuest(200, 5).stream(2, 60)
	var e bytes.Buffer
	if err := pagecodec.New(pagecodec.Config{}).Encode(&e, bytes.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	enc := e.Bytes()
	hdr := []byte("VMPC\x03")
	// zstdOp is a page-zstd operation for page 0 of block "a": p as the
	// first block of a zstd frame whose window is win bytes.
	zstdOp := func(p []byte, win int) []byte {
		var b bytes.Buffer
		w, err := zstd.NewWriter(&b, zstd.WithWindowSize(win), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false))
		if err != nil {
			t.Fatal(err)
		}
		w.Write(p)
		w.Flush()
		return cat([]byte{2, 8, 0x17, 1, 'a', 0}, binary.AppendUvarint(nil, uint64(b.Len())), b.Bytes())
	}
	text := textPage(rand.New(rand.NewPCG(5, 5)))
	for _, tc := range []struct {
		name, why string
		data      []byte
	}{
		{"no header", "no codec header", []byte("VM")},
		{"wrong magic", "not a page codec stream", append([]byte("QEVM\x01"), 1, 0)},
		{"future version", "codec version 9", []byte("VMPC\x09")},
		{"version 1", "codec version 1", []byte("VMPC\x01")},
		{"version 2", "codec version 2", []byte("VMPC\x02")},
		{"unknown op", "unknown operation 0x7f", append(bytes.Clone(hdr), 0x7f)},
		{"page before cache", "a page before the cache size", append(bytes.Clone(hdr), 0x14, 1, 'a', 0)},
		{"cache twice", "cache size given twice", append(bytes.Clone(hdr), 2, 1, 2, 1)},
		{"cache too big", "cache slots", append(bytes.Clone(hdr), 2, 0xff, 0xff, 0xff, 0xff, 0x0f)},
		{"varint overflow", "varint overflows", append(bytes.Clone(hdr), 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f)},
		{"literal too long", "literal length", append(bytes.Clone(hdr), 1, 0xff, 0xff, 0xff, 0x0f)},
		{"continue first", "CONTINUE before any block", append(bytes.Clone(hdr), 2, 8, 0x94, 0)},
		{"ref to empty slot", "empty cache slot 3", append(bytes.Clone(hdr), 2, 8, 0x11, 1, 'a', 0, 3, 1, 2, 3, 4, 5, 6, 7, 8)},
		{"delta without base", "no earlier version", append(bytes.Clone(hdr), 2, 8, 0x12, 1, 'a', 0, 2, 0, 1)},
		{"delta out of bounds", "malformed page delta", cat(hdr, []byte{2, 8, 0x14, 1, 'a', 0}, make([]byte, ps), []byte{0x92, 0, 3, 0xff, 0x1f, 1})},
		{"bad lz4", "lz4 data does not give one page", append(bytes.Clone(hdr), 2, 8, 0x13, 1, 'a', 0, 3, 1, 2, 3)},
		{"deflate of version 2", "unknown operation 0x16", append(bytes.Clone(hdr), 2, 8, 0x16, 1, 'a', 0, 3, 0xff, 0xff, 0xff)},
		{"zstd too long", "zstd length", append(bytes.Clone(hdr), 2, 8, 0x17, 1, 'a', 0, 0xc1, 0x20)},
		{"empty zstd", "empty zstd data", append(bytes.Clone(hdr), 2, 8, 0x17, 1, 'a', 0, 0)},
		{"bad zstd", "zstd data does not give one page", append(bytes.Clone(hdr), 2, 8, 0x17, 1, 'a', 0, 3, 0xff, 0xff, 0xff)},
		{"zstd short of a page", "zstd data does not give one page", cat(hdr, zstdOp(text[:ps-1], 1<<20))},
		{"zstd window past 8 MiB", "zstd data does not give one page", cat(hdr, zstdOp(text, 64<<20))},
		{"truncated zstd", "truncated", cat(hdr, zstdOp(text, 1<<20)[:20])},
		{"seed not announced", "seed 0 of 0 announced", append(bytes.Clone(hdr), 2, 8, 0x15, 1, 'a', 0, 0)},
		{"truncated raw page", "truncated", append(bytes.Clone(hdr), 2, 8, 0x14, 1, 'a', 0, 1, 2)},
		{"truncated real stream", "truncated", enc[:len(enc)/2+1]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := pagecodec.New(pagecodec.Config{MaxCacheBytes: 1 << 30}).Decode(io.Discard, bytes.NewReader(tc.data))
			var ce *pagecodec.CorruptError
			if !errors.As(err, &ce) || !strings.Contains(ce.Reason, tc.why) {
				t.Fatalf("err %v, want a CorruptError with %q", err, tc.why)
			}
		})
	}
}

// The encoder's write failures are told apart from its input's.
func TestEncodeErrors(t *testing.T) {
	in := newGuest(100, 6).stream(1, 10)
	boom := errors.New("tunnel down")
	err := pagecodec.New(pagecodec.Config{}).Encode(errWriter{boom}, bytes.NewReader(in))
	if !errors.Is(err, boom) || !pagecodec.IsWriteError(err) {
		t.Fatalf("write failure: %v", err)
	}
	err = pagecodec.New(pagecodec.Config{}).Encode(io.Discard, iotest.TimeoutReader(bytes.NewReader(in)))
	if err == nil || pagecodec.IsWriteError(err) {
		t.Fatalf("read failure: %v", err)
	}
}

type errWriter struct{ err error }

func (w errWriter) Write([]byte) (int, error) { return 0, w.err }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// Runs of QEMU's ZERO records leave in stream order with the framing
// around them: a run does not reach across a section boundary, nor wait
// behind a flush of literal bytes that came after it.
func TestZeroRunsKeepStreamOrder(t *testing.T) {
	across := migstreamtest.NewBuilder().Start(migstreamtest.Blocks(64)...).
		Part().Zero("pc.ram", 5).EOS().
		Part().Zero("pc.ram", 6).Zero("pc.ram", 7).EOS().
		End().Zero("pc.ram", 8).EOS().DeviceState(10).Bytes()
	roundTrip(t, across, pagecodec.Config{})

	b := migstreamtest.NewBuilder().Start(migstreamtest.Blocks(64)...).Part().Zero("pc.ram", 1).Zero("pc.ram", 2).EOS()
	for range 8000 { // more than one literal flush of framing
		b.Command(migstream.CmdPing, []byte{0, 0, 0, 1})
	}
	b.Part().Zero("pc.ram", 3).EOS()
	roundTrip(t, b.DeviceState(10).Bytes(), pagecodec.Config{})
}

// Every effort rebuilds the stream exactly; each uses the encodings it
// promises: fast never compresses, max sends text pages with DEFLATE when
// that beats LZ4, and costs fewer bytes than lz4.
func TestRoundTripEfforts(t *testing.T) {
	in := newGuest(1500, 11).stream(3, 300)
	var size [4]int
	for _, eff := range []pagecodec.Effort{pagecodec.EffortFast, pagecodec.EffortLZ4, pagecodec.EffortMax} {
		enc, st := roundTrip(t, in, pagecodec.Config{Effort: eff})
		size[eff] = len(enc)
		p := st.Pages
		t.Logf("%v: %d bytes, %+v, effort %+v", eff, len(enc), p, st.EffortMs)
		if st.Effort != eff.String() {
			t.Errorf("%v: stats say effort %q", eff, st.Effort)
		}
		switch eff {
		case pagecodec.EffortFast:
			if p.LZ4.Pages != 0 || p.Zstd.Pages != 0 || p.Raw.Pages == 0 || p.Delta.Pages == 0 {
				t.Errorf("fast: %+v", p)
			}
		case pagecodec.EffortLZ4:
			if p.LZ4.Pages == 0 || p.Zstd.Pages != 0 {
				t.Errorf("lz4: %+v", p)
			}
		case pagecodec.EffortMax:
			if p.Zstd.Pages == 0 {
				t.Errorf("max: no page went out with zstd: %+v", p)
			}
		}
	}
	if !(size[pagecodec.EffortMax] < size[pagecodec.EffortLZ4] && size[pagecodec.EffortLZ4] < size[pagecodec.EffortFast]) {
		t.Errorf("encoded sizes fast %d, lz4 %d, max %d: want each effort smaller", size[1], size[2], size[3])
	}
}

// ParseEffort takes the flag's names and refuses others.
func TestParseEffort(t *testing.T) {
	for _, e := range []pagecodec.Effort{pagecodec.EffortAuto, pagecodec.EffortFast, pagecodec.EffortLZ4, pagecodec.EffortMax} {
		if got, err := pagecodec.ParseEffort(e.String()); err != nil || got != e {
			t.Errorf("ParseEffort(%q) = %v, %v", e.String(), got, err)
		}
	}
	if _, err := pagecodec.ParseEffort("fastest"); err == nil || !strings.Contains(err.Error(), "auto, fast, lz4 or max") {
		t.Errorf("ParseEffort(fastest): %v", err)
	}
}

// slowWriter is a link that takes its time: every write blocks for delay.
type slowWriter struct {
	w     io.Writer
	delay time.Duration
}

func (s slowWriter) Write(p []byte) (int, error) { time.Sleep(s.delay); return s.w.Write(p) }

// With EffortAuto the encoder compresses hardest behind a slow link and
// stops compressing when the link takes everything at once; either way
// the stream comes back exact.
func TestEffortAutoFollowsLink(t *testing.T) {
	stream := func(n int) []byte {
		rng := rand.New(rand.NewPCG(12, 12))
		b := migstreamtest.NewBuilder().Start(migstreamtest.Blocks(uint64(n))...).Part()
		for i := range uint64(n) {
			if i%2 == 0 {
				b.Page("pc.ram", i, textPage(rng))
			} else {
				b.Page("pc.ram", i, binaryPage(rng))
			}
		}
		return b.EOS().Bytes()
	}
	for _, link := range []struct {
		name  string
		pages int
		delay time.Duration
	}{
		{"slow", 4000, 40 * time.Millisecond},
		// Many windows, into a buffer grown beforehand: growing it is
		// time spent in Write, which the encoder counts as waiting.
		{"instant", 16000, 0},
	} {
		t.Run(link.name, func(t *testing.T) {
			in := stream(link.pages)
			c := pagecodec.New(pagecodec.Config{})
			var e, d bytes.Buffer
			e.Grow(len(in) + len(in)/8)
			if err := c.Encode(slowWriter{&e, link.delay}, bytes.NewReader(in)); err != nil {
				t.Fatal(err)
			}
			if err := c.Decode(&d, bytes.NewReader(e.Bytes())); err != nil || !bytes.Equal(d.Bytes(), in) {
				t.Fatalf("round trip failed: %v", err)
			}
			st := c.Stats()
			t.Logf("%d bytes; pages %+v; effort %+v", e.Len(), st.Pages, st.EffortMs)
			if st.Effort != "auto" {
				t.Errorf("stats say effort %q", st.Effort)
			}
			if link.delay > 0 && (st.EffortMs.Max == 0 || st.Pages.Zstd.Pages == 0 || st.EffortMs.Fast > 0) {
				t.Errorf("behind a slow link: effort %+v, pages %+v; want max and no fast", st.EffortMs, st.Pages)
			}
			// One window at lz4, then fast to the end: most pages raw.
			if link.delay == 0 && (st.EffortMs.Fast == 0 || st.Pages.Raw.Pages <= st.Pages.LZ4.Pages || st.EffortMs.Max > 0) {
				t.Errorf("on an instant link: effort %+v, pages %+v; want most pages at fast and none at max", st.EffortMs, st.Pages)
			}
		})
	}
}

// At max, a page that shares most of its bytes with a page sent before
// (at another address, shifted: no reference, no delta) costs a fraction
// of what LZ4 makes of it on its own; a random page goes through zstd as
// a raw block, a few bytes more than the page.
func TestMaxUsesHistory(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 13))
	a := textPage(rng)
	b := append(bytes.Clone(a[100:]), a[:100]...)
	in := migstreamtest.NewBuilder().Start(migstreamtest.Blocks(16)...).Part().
		Page("pc.ram", 0, a).Page("pc.ram", 7, b).Page("pc.ram", 9, randomPage(rng)).EOS().Bytes()
	_, lz := roundTrip(t, in, pagecodec.Config{Effort: pagecodec.EffortLZ4})
	_, mx := roundTrip(t, in, pagecodec.Config{Effort: pagecodec.EffortMax})
	t.Logf("lz4 %+v\nmax %+v", lz.Pages, mx.Pages)
	if lz.Pages.LZ4.Pages != 2 || lz.Pages.Raw.Pages != 1 {
		t.Errorf("lz4: %+v, want the text pages as LZ4, the random one raw", lz.Pages)
	}
	if mx.Pages.Zstd.Pages != 3 || mx.Pages.Raw.Pages != 0 {
		t.Fatalf("max: %+v, want every page as zstd", mx.Pages)
	}
	if text := mx.Pages.Zstd.Bytes - (ps + 24); text > lz.Pages.LZ4.Bytes*6/10 {
		t.Errorf("max: about %d bytes for the two text pages, LZ4 %d: the second should cost little", text, lz.Pages.LZ4.Bytes)
	}
}

// An effort New does not know is auto, not a crash.
func TestUnknownEffortIsAuto(t *testing.T) {
	_, st := roundTrip(t, newGuest(50, 14).stream(1, 10), pagecodec.Config{Effort: 9})
	if st.Effort != "auto" {
		t.Errorf("effort %q, want auto", st.Effort)
	}
}
