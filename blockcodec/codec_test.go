package blockcodec_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/vmigrate/vmigrate/blockcodec"
	"github.com/vmigrate/vmigrate/blockcodec/blockcodectest"
	"github.com/vmigrate/vmigrate/internal/leakcheck"
)

// channel is what one channel did: what the NBD server received, what
// the client got back, what crossed, and each direction's error
// (source ToPeer, dest ToLocal, dest ToPeer, source ToLocal).
type channel struct {
	server, client []byte
	encoded        int64
	errs           [4]error
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// runChannel runs a source end of src and a dest end of dst joined by
// buffered pipes: the client sends client, the server replies replies.
func runChannel(t testing.TB, src, dst *blockcodec.Codec, client io.Reader, replies []byte) channel {
	t.Helper()
	a, b := newPipe(256<<10), newPipe(256<<10)
	se, de := src.SourceEnd(), dst.DestEnd()
	var server, back bytes.Buffer
	var ch channel
	cw := &countWriter{w: a}
	var wg sync.WaitGroup
	wg.Add(4)
	go func() { // source end: client → channel
		defer wg.Done()
		ch.errs[0] = se.ToPeer(cw, client)
		a.CloseWrite()
	}()
	go func() { // dest end: channel → server
		defer wg.Done()
		if ch.errs[1] = de.ToLocal(&server, a); ch.errs[1] != nil {
			a.Fail(ch.errs[1])
		}
	}()
	go func() { // dest end: server → channel
		defer wg.Done()
		ch.errs[2] = de.ToPeer(b, bytes.NewReader(replies))
		b.CloseWrite()
	}()
	go func() { // source end: channel → client
		defer wg.Done()
		if ch.errs[3] = se.ToLocal(&back, b); ch.errs[3] != nil {
			b.Fail(ch.errs[3])
		}
	}()
	wg.Wait()
	ch.server, ch.client, ch.encoded = server.Bytes(), back.Bytes(), cw.n
	return ch
}

// roundTrip runs in through a channel and checks that the server got
// exactly in and the client exactly the replies.
func roundTrip(t testing.TB, src, dst *blockcodec.Codec, in []byte) channel {
	t.Helper()
	replies := []byte("NBDMAGIC" + "IHAVEOPT" + "\x00\x03 and whatever the server says")
	ch := runChannel(t, src, dst, bytes.NewReader(in), replies)
	for i, err := range ch.errs {
		if err != nil {
			t.Fatalf("direction %d: %v", i, err)
		}
	}
	if !bytes.Equal(ch.server, in) {
		t.Fatalf("the server got %d bytes differing from the client's %d at byte %d", len(ch.server), len(in), firstDiff(ch.server, in))
	}
	if !bytes.Equal(ch.client, replies) {
		t.Fatalf("the client got %q, want %q", ch.client, replies)
	}
	return ch
}

func firstDiff(a, b []byte) int {
	i := 0
	for i < min(len(a), len(b)) && a[i] == b[i] {
		i++
	}
	return i
}

func newCodec(t testing.TB, cfg blockcodec.Config) *blockcodec.Codec {
	t.Helper()
	if cfg.Log == nil {
		if tt, ok := t.(*testing.T); ok {
			cfg.Log = zaptest.NewLogger(tt)
		}
	}
	c, err := blockcodec.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Payload makers.

func textBytes(rng *rand.Rand, n int) []byte {
	words := strings.Fields("the mirror writes every block of the disk to the destination through a tunnel over the WAN and QEMU waits for its acknowledgement func return if err != nil")
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[rng.IntN(len(words))])
		b.WriteByte(" \n\t"[rng.IntN(3)])
	}
	return b.Bytes()[:n]
}

func randomBytes(rng *rand.Rand, n int) []byte {
	p := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(p[i:], rng.Uint64())
	}
	return p[:n]
}

// base is the destination's image: the blocks its index holds.
func base(rng *rand.Rand, units, unit int) []byte {
	var b []byte
	for i := range units {
		if i%2 == 0 {
			b = append(b, randomBytes(rng, unit)...)
		} else {
			b = append(b, textBytes(rng, unit)...)
		}
	}
	return b
}

// mixed makes n bytes of pieces of zero, text, random and base's units.
func mixed(rng *rand.Rand, n, unit int, base []byte) []byte {
	var p []byte
	for len(p) < n {
		k := unit * (1 + rng.IntN(3))
		switch rng.IntN(4) {
		case 0:
			p = append(p, make([]byte, k)...)
		case 1:
			p = append(p, textBytes(rng, k)...)
		case 2:
			p = append(p, randomBytes(rng, k)...)
		case 3:
			if len(base) >= unit {
				u := rng.IntN(len(base) / unit)
				p = append(p, base[u*unit:(u+1)*unit]...)
			}
		}
	}
	return p[:n]
}

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const unit = 4096
	img := base(rng, 64, unit)
	cases := []struct {
		name     string
		extended bool
		unit     int // of the index; 0: none
		cfg      blockcodec.Config
		payload  func() []byte
		from     uint64
		check    func(t *testing.T, st blockcodec.Stats, n int64)
	}{
		{name: "zero", payload: func() []byte { return make([]byte, 1<<20) },
			check: func(t *testing.T, st blockcodec.Stats, n int64) {
				if st.Zero.Bytes != n || st.Zero.Wire > 8 {
					t.Errorf("zero %+v for %d bytes", st.Zero, n)
				}
			}},
		{name: "text", payload: func() []byte { return textBytes(rng, 300<<10) },
			check: func(t *testing.T, st blockcodec.Stats, n int64) {
				if st.LZ4.Bytes != n || st.LZ4.Wire > n/2 || st.LZ4.Blocks != 5 {
					t.Errorf("lz4 %+v for %d bytes", st.LZ4, n)
				}
			}},
		{name: "text-deflate", cfg: blockcodec.Config{Deflate: true}, payload: func() []byte { return textBytes(rng, 256<<10) },
			check: func(t *testing.T, st blockcodec.Stats, n int64) {
				if st.Deflate.Bytes != n || st.Deflate.Wire > n/3 {
					t.Errorf("deflate %+v for %d bytes", st.Deflate, n)
				}
			}},
		{name: "random", payload: func() []byte { return randomBytes(rng, 200<<10) },
			check: func(t *testing.T, st blockcodec.Stats, n int64) {
				if st.Raw.Bytes != n || st.Raw.Wire > n+64 {
					t.Errorf("raw %+v for %d bytes", st.Raw, n)
				}
			}},
		{name: "referenced", unit: unit, payload: func() []byte { return img },
			check: func(t *testing.T, st blockcodec.Stats, n int64) {
				if st.Ref.Bytes != n || st.Ref.Blocks != n/unit || st.Ref.Wire != 33*st.Ref.Blocks || st.RefsResolved != st.Ref.Blocks {
					t.Errorf("ref %+v, %d resolved for %d bytes", st.Ref, st.RefsResolved, n)
				}
				if st.AnnouncedKeys != 64 || st.Unit != unit {
					t.Errorf("announced %d keys of %d", st.AnnouncedKeys, st.Unit)
				}
			}},
		{name: "referenced-unaligned", unit: unit, from: 1000, payload: func() []byte { return img[1000:] },
			check: func(t *testing.T, st blockcodec.Stats, n int64) {
				if st.Ref.Blocks != 63 || st.Raw.Bytes+st.LZ4.Bytes != unit-1000 {
					t.Errorf("ref %+v, raw %+v, lz4 %+v", st.Ref, st.Raw, st.LZ4)
				}
			}},
		{name: "mixed-extended", extended: true, unit: unit, payload: func() []byte { return mixed(rng, 2<<20, unit, img) }},
		{name: "mixed-small-unit", unit: 512, payload: func() []byte { return mixed(rng, 1<<20, 512, base(rng, 16, 512)) }},
		{name: "mixed-unit-past-block", unit: 1 << 20, cfg: blockcodec.Config{BlockSize: 4096},
			payload: func() []byte {
				return append(mixed(rng, 3<<20, 1<<20, nil), base(rand.New(rand.NewPCG(3, 4)), 4, 1<<20)...)
			},
			check: func(t *testing.T, st blockcodec.Stats, n int64) {
				if st.Ref.Blocks != 4 || st.Ref.Bytes != 4<<20 {
					t.Errorf("ref %+v", st.Ref)
				}
			}},
		// Blocks the index holds are found at any offset aligned to the
		// unit, and only there.
		{name: "max-payload", unit: unit, from: 7 * unit, payload: func() []byte { return mixed(rng, blockcodec.MaxPayload, unit, img) }},
		{name: "max-payload-unaligned", unit: unit, from: 7, payload: func() []byte { return img[:2*unit] },
			check: func(t *testing.T, st blockcodec.Stats, n int64) {
				if st.Ref.Blocks != 0 {
					t.Errorf("ref %+v", st.Ref)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			leakcheck.Check(t)
			dcfg := tc.cfg
			var ix *blockcodectest.Index
			if tc.unit != 0 {
				ix = blockcodectest.NewIndex(tc.unit)
				ix.Add(img)
				if tc.unit != unit {
					ix.Add(base(rand.New(rand.NewPCG(3, 4)), 4, tc.unit))
				}
				dcfg.Index = ix
			}
			src, dst := newCodec(t, tc.cfg), newCodec(t, dcfg)
			p := tc.payload()
			s := &blockcodectest.Stream{Extended: tc.extended}
			s.Handshake("vda").Request(blockcodectest.CmdFlush, 0, 0, 0).Write(tc.from, p).Request(blockcodectest.CmdFlush, 0, 0, 0).Disc()
			ch := roundTrip(t, src, dst, s.B)
			st := src.Stats()
			ds := dst.Stats()
			t.Logf("%d payload bytes in %d encoded: zero %+v ref %+v lz4 %+v deflate %+v raw %+v", st.PayloadBytes, st.EncodedBytes,
				st.Zero, st.Ref, st.LZ4, st.Deflate, st.Raw)
			n := int64(len(p))
			if st.Writes != 1 || st.PayloadBytes != n || st.StreamBytes != int64(len(s.B)) || st.EncodedBytes != ch.encoded || st.Channels != 1 {
				t.Errorf("stats %+v", st)
			}
			if sum := st.Zero.Bytes + st.Ref.Bytes + st.LZ4.Bytes + st.Deflate.Bytes + st.Raw.Bytes; sum != n {
				t.Errorf("records cover %d bytes of %d", sum, n)
			}
			hdr := int64(28)
			if tc.extended {
				hdr = 32
			}
			if st.PassthroughBytes != int64(len(s.B))-n-hdr {
				t.Errorf("passthrough %d of %d", st.PassthroughBytes, len(s.B))
			}
			if ds.DecodedBytes != int64(len(s.B)) {
				t.Errorf("decoded %d bytes, want %d", ds.DecodedBytes, len(s.B))
			}
			st.RefsResolved = ds.RefsResolved
			if tc.check != nil {
				tc.check(t, st, n)
			}
		})
	}
}

// A client stream of random requests, payloads and options, any size,
// aligned or not, reaches the server unchanged.
func TestRoundTripProperty(t *testing.T) {
	leakcheck.Check(t)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 24 {
		unit := []int{512, 4096, 65536}[i%3]
		img := base(rng, 32, unit)
		ix := blockcodectest.NewIndex(unit)
		ix.Add(img)
		cfg := blockcodec.Config{BlockSize: 4096 << rng.IntN(5), Deflate: i%4 == 0}
		dcfg := cfg
		if i%5 != 0 {
			dcfg.Index = ix
		}
		src, dst := newCodec(t, cfg), newCodec(t, dcfg)
		s := &blockcodectest.Stream{Extended: i%2 == 1}
		s.Handshake("vda")
		var payload int64
		for range 1 + rng.IntN(20) {
			switch rng.IntN(6) {
			case 0:
				s.Request(blockcodectest.CmdFlush, 0, 0, 0)
			case 1:
				s.Request(blockcodectest.CmdTrim, 1, uint64(rng.IntN(1<<30)), uint64(rng.IntN(1<<20)))
			case 2:
				if s.Extended {
					p := randomBytes(rng, rng.IntN(100))
					s.Request(blockcodectest.CmdBlockStatus, blockcodectest.FlagPayloadLen, 0, uint64(len(p)))
					s.B = append(s.B, p...)
				}
			default:
				p := mixed(rng, 1+rng.IntN(256<<10), unit, img)
				from := uint64(rng.IntN(1<<20)) * uint64([]int{1, 512, unit}[rng.IntN(3)])
				s.Write(from, p)
				payload += int64(len(p))
			}
		}
		s.Disc()
		roundTrip(t, src, dst, s.B)
		if st := src.Stats(); st.PayloadBytes != payload {
			t.Fatalf("case %d: %d payload bytes counted, want %d", i, st.PayloadBytes, payload)
		}
	}
}

// Writes are acknowledged by the server only: the source end passes
// nothing back but the server's bytes, whatever the client sent.
func TestRepliesPassUnchanged(t *testing.T) {
	leakcheck.Check(t)
	src, dst := newCodec(t, blockcodec.Config{}), newCodec(t, blockcodec.Config{Index: blockcodectest.NewIndex(4096)})
	replies := randomBytes(rand.New(rand.NewPCG(7, 8)), 1<<20)
	s := (&blockcodectest.Stream{}).Handshake("vda").Write(0, make([]byte, 8192))
	ch := runChannel(t, src, dst, bytes.NewReader(s.B), replies)
	if !bytes.Equal(ch.client, replies) || !bytes.Equal(ch.server, s.B) {
		t.Fatalf("client got %d bytes of %d, server %d of %d (errors %v)", len(ch.client), len(replies), len(ch.server), len(s.B), ch.errs)
	}
}

// What the encoder cannot parse passes through unchanged, and it says
// why.
func TestFallback(t *testing.T) {
	cases := map[string][]byte{
		"unknown-magic": append((&blockcodectest.Stream{}).Handshake("vda").Write(0, make([]byte, 4096)).B, "\x16\x03\x01 TLS client hello, say"...),
		"long-option":   append((&blockcodectest.Stream{}).Option(1, make([]byte, blockcodec.MaxOptionLen+1)).B[:0:0], (&blockcodectest.Stream{B: []byte{0, 0, 0, 3}}).Option(1, make([]byte, blockcodec.MaxOptionLen+1)).B...),
		"cut-header":    (&blockcodectest.Stream{}).Handshake("vda").Write(0, make([]byte, 4096)).B[:4+60+28+4096+10],
		"cut-payload":   (&blockcodectest.Stream{}).Handshake("vda").Write(0, textBytes(rand.New(rand.NewPCG(1, 1)), 8192)).B[:200],
		"cut-flags":     {0, 0},
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			leakcheck.Check(t)
			src := newCodec(t, blockcodec.Config{})
			roundTrip(t, src, newCodec(t, blockcodec.Config{}), in)
			if st := src.Stats(); st.Fallback == "" || st.StreamBytes != int64(len(in)) {
				t.Errorf("fallback %q, stream bytes %d of %d", st.Fallback, st.StreamBytes, len(in))
			}
		})
	}
}

// A write larger than QEMU's bound fails the encoder with a clear error.
func TestOversizeWrite(t *testing.T) {
	s := (&blockcodectest.Stream{Extended: true}).Handshake("vda").Request(blockcodectest.CmdWrite, 0, 0, blockcodec.MaxPayload+1)
	src := newCodec(t, blockcodec.Config{})
	var out bytes.Buffer
	err := src.Encode(&out, bytes.NewReader(s.B))
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	// The encoder does not refuse the stream: it passes it through, and
	// says why (QEMU's server drops such a client anyway).
	if st := src.Stats(); !strings.Contains(st.Fallback, "32 MiB bound") {
		t.Errorf("fallback %q", st.Fallback)
	}
}

// The handshake goes out before the announcement comes; the first write
// waits for it; a reverse stream that ends without one fails the write.
func TestAnnouncementWait(t *testing.T) {
	leakcheck.Check(t)
	src := newCodec(t, blockcodec.Config{})
	se := src.SourceEnd()
	a, b := newPipe(1<<20), newPipe(1<<20)
	s := (&blockcodectest.Stream{}).Handshake("vda")
	hs := len(s.B)
	s.Write(0, make([]byte, 4096))
	client := newPipe(1 << 20)
	client.Write(s.B[:hs])
	done := make(chan error, 2)
	go func() { done <- se.ToPeer(a, client) }()
	go func() { done <- se.ToLocal(io.Discard, b) }()
	got := make([]byte, 5+2+hs)
	if _, err := io.ReadFull(a, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[7:], s.B[:hs]) {
		t.Fatalf("channel carried %q", got)
	}
	client.Write(s.B[hs:])
	client.CloseWrite()
	b.CloseWrite() // the reverse stream ends without an announcement
	var errs []error
	for range 2 {
		errs = append(errs, <-done)
	}
	for _, err := range errs {
		var ae *blockcodec.AnnounceError
		if !errors.As(err, &ae) || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("err %v: want an AnnounceError for a cut stream", err)
		}
	}
}

func TestBadAnnouncement(t *testing.T) {
	cases := map[string]string{
		"magic":      "VMBX\x01\x00\x00",
		"version":    "VMBA\x02\x00\x00",
		"unit":       "VMBA\x01\x80\x02\x00", // 256
		"unit-odd":   "VMBA\x01\x81\x20\x00", // 4097
		"keys-no-ix": "VMBA\x01\x00\x01\x05",
		"too-many":   "VMBA\x01\x80\x20\x81\x80\x80\x80\x01",
		"order":      "VMBA\x01\x80\x20\x02\x05\x00",
		"cut":        "VMBA\x01\x80\x20\x03\x05\x01",
	}
	for name, ann := range cases {
		t.Run(name, func(t *testing.T) {
			se := newCodec(t, blockcodec.Config{}).SourceEnd()
			err := se.ToLocal(io.Discard, strings.NewReader(ann))
			var ae *blockcodec.AnnounceError
			if !errors.As(err, &ae) {
				t.Fatalf("err %v: want an AnnounceError", err)
			}
			// The encoder hears of it at its first write.
			s := (&blockcodectest.Stream{}).Handshake("vda").Write(0, make([]byte, 512))
			if err := se.ToPeer(io.Discard, bytes.NewReader(s.B)); !errors.As(err, &ae) {
				t.Fatalf("encoder: %v", err)
			}
		})
	}
}

// An index that cannot read a block, or gives the wrong one, fails the
// decoder with a CorruptError naming the block.
func TestIndexFailures(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	img := base(rng, 4, 4096)
	for _, mode := range []string{"fail", "lie"} {
		t.Run(mode, func(t *testing.T) {
			leakcheck.Check(t)
			ix := blockcodectest.NewIndex(4096)
			ix.Add(img)
			ix.Fail, ix.Lie = mode == "fail", mode == "lie"
			src, dst := newCodec(t, blockcodec.Config{}), newCodec(t, blockcodec.Config{Index: ix})
			s := (&blockcodectest.Stream{}).Handshake("vda").Write(0, img)
			ch := runChannel(t, src, dst, bytes.NewReader(s.B), nil)
			var ce *blockcodec.CorruptError
			if !errors.As(ch.errs[1], &ce) || !strings.Contains(ce.Reason, "reference") || !blockcodec.IsCorrupt(ch.errs[1]) {
				t.Fatalf("decoder: %v", ch.errs[1])
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []blockcodec.Config{{BlockSize: 1024}, {BlockSize: 3 << 12}, {BlockSize: 2 << 20}, {Index: blockcodectest.NewIndex(256)}} {
		if _, err := blockcodec.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted it", cfg)
		}
	}
	c, err := blockcodec.New(blockcodec.Config{})
	if err != nil || c.Name() != blockcodec.Name || c.Name() != "nbd1" || c.Config().BlockSize != blockcodec.DefaultBlockSize {
		t.Fatalf("New: %v, %v", c, err)
	}
}

func TestStatsJSON(t *testing.T) {
	b, err := json.Marshal(blockcodec.Stats{Writes: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{`"writes":1`, `"payload_bytes"`, `"encoded_bytes"`, `"zero":{"blocks":0,"bytes":0,"wire_bytes":0}`, `"passthrough_bytes"`, `"encode_cpu_ms"`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("%s lacks %s", b, k)
		}
	}
}
