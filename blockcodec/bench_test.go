package blockcodec_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/vmigrate/vmigrate/blockcodec"
	"github.com/vmigrate/vmigrate/blockcodec/blockcodectest"
)

// The codec's cost per core, for the NBD stream of a mirror: 64 KiB
// writes (the granularity blockdev-mirror picks for most targets) of each
// kind of content, through an encoder whose dest end announced an index
// of 4 KiB blocks, so every non-zero unit is hashed and looked up as in
// a migration with a base image. MB/s counts write payload; wire/payload
// is what the encoding leaves of it. Output goes to a counter, not a
// socket: zero and raw decode measure the codec's own work alone.
//
//	go test -run '^$' -bench 'Encode|Decode|Announce' -cpu 1 ./blockcodec
const (
	benchWrite  = 64 << 10
	benchWrites = 64 // per stream: 4 MiB of payload
	benchUnit   = 4096
)

// benchCase is one kind of content: a client stream of benchWrites
// writes of it, at consecutive aligned offsets.
type benchCase struct {
	name string
	cfg  blockcodec.Config
	data func(rng *rand.Rand, indexed []byte) []byte // benchWrites*benchWrite bytes
}

var benchCases = []benchCase{
	{name: "zero", data: func(*rand.Rand, []byte) []byte { return make([]byte, benchWrites*benchWrite) }},
	{name: "ref", data: func(_ *rand.Rand, indexed []byte) []byte { return indexed }},
	{name: "text", data: func(rng *rand.Rand, _ []byte) []byte { return compressible(rng, benchWrites*benchWrite) }},
	{name: "text-deflate", cfg: blockcodec.Config{Deflate: true}, data: func(rng *rand.Rand, _ []byte) []byte {
		return compressible(rng, benchWrites*benchWrite)
	}},
	{name: "random", data: func(rng *rand.Rand, _ []byte) []byte { return incompressible(rng, benchWrites*benchWrite) }},
}

// benchSetup is what every case shares: the destination's index (the
// blocks of the "ref" case, random bytes, so a reference saves them all)
// and what its dest end announces.
type benchSetup struct {
	indexed []byte
	ix      *blockcodectest.Index
	ann     []byte
}

func newBenchSetup(b *testing.B) *benchSetup {
	rng := rand.New(rand.NewPCG(41, 42))
	s := &benchSetup{indexed: incompressible(rng, benchWrites*benchWrite), ix: blockcodectest.NewIndex(benchUnit)}
	s.ix.Add(s.indexed)
	s.ann = announcement(b, s.ix)
	return s
}

// stream is the client stream of a case, and its payload bytes.
func (s *benchSetup) stream(c benchCase) ([]byte, int64) {
	p := c.data(rand.New(rand.NewPCG(43, 44)), s.indexed)
	st := (&blockcodectest.Stream{}).Handshake("vda")
	for i := 0; i < len(p); i += benchWrite {
		st.Write(uint64(i), p[i:i+benchWrite])
	}
	return st.Request(blockcodectest.CmdFlush, 0, 0, 0).Disc().B, int64(len(p))
}

// byteCounter counts what is written to it.
type byteCounter int64

func (c *byteCounter) Write(p []byte) (int, error) {
	*c += byteCounter(len(p))
	return len(p), nil
}

// BenchmarkEncode is the source end: one NBD client stream per
// iteration, through a fresh channel (announcement read first).
func BenchmarkEncode(b *testing.B) {
	setup := newBenchSetup(b)
	for _, c := range benchCases {
		b.Run(c.name, func(b *testing.B) {
			client, payload := setup.stream(c)
			codec, err := blockcodec.New(c.cfg)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(payload)
			b.ReportAllocs()
			var wire byteCounter
			for b.Loop() {
				wire = 0
				se := codec.SourceEnd()
				if err := se.ToLocal(io.Discard, bytes.NewReader(setup.ann)); err != nil {
					b.Fatal(err)
				}
				if err := se.ToPeer(&wire, bytes.NewReader(client)); err != nil {
					b.Fatal(err)
				}
			}
			if st := codec.Stats(); st.Fallback != "" || c.name == "ref" && st.Ref.Bytes != st.PayloadBytes {
				b.Fatalf("stats %+v", st)
			}
			b.ReportMetric(float64(wire)/float64(payload), "wire/payload")
		})
	}
}

// BenchmarkDecode is the dest end: the stream BenchmarkEncode made, per
// iteration, references read from the in-memory index and verified.
func BenchmarkDecode(b *testing.B) {
	setup := newBenchSetup(b)
	for _, c := range benchCases {
		b.Run(c.name, func(b *testing.B) {
			client, payload := setup.stream(c)
			enc, _ := encodeFor(b, c.cfg, setup.ann, client)
			codec, err := blockcodec.New(blockcodec.Config{Index: setup.ix})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(payload)
			b.ReportAllocs()
			var out byteCounter
			for b.Loop() {
				out = 0
				if err := codec.Decode(&out, bytes.NewReader(enc)); err != nil {
					b.Fatal(err)
				}
			}
			if int(out) != len(client) {
				b.Fatalf("decoded %d bytes, want %d", out, len(client))
			}
			b.ReportMetric(float64(len(enc))/float64(payload), "wire/payload")
		})
	}
}

// keyList is a Neighbours of keys only, for the announcement's size.
type keyList []uint64

func (k keyList) BlockSize() int                   { return benchUnit }
func (k keyList) Keys() []uint64                   { return k }
func (k keyList) Read(fp [32]byte, b []byte) error { return errors.New("keys only") }

// BenchmarkAnnounce is the dest end's announcement of 2^20 uniform keys
// (4 GiB of 4 KiB blocks): writing it, and reading it at the source end.
// "B/key" is its size per key (announce.go).
func BenchmarkAnnounce(b *testing.B) {
	rng := rand.New(rand.NewPCG(45, 46))
	keys := make(keyList, 1<<20)
	for i := range keys {
		keys[i] = rng.Uint64()
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	ann := announcement(b, keys)
	perKey := float64(len(ann)) / float64(len(keys))
	b.Run("write", func(b *testing.B) {
		codec, err := blockcodec.New(blockcodec.Config{Index: keys})
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(ann)))
		for b.Loop() {
			if err := codec.DestEnd().ToPeer(io.Discard, bytes.NewReader(nil)); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(perKey, "B/key")
	})
	b.Run("read", func(b *testing.B) {
		codec, err := blockcodec.New(blockcodec.Config{})
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(ann)))
		for b.Loop() {
			if err := codec.SourceEnd().ToLocal(io.Discard, bytes.NewReader(ann)); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(perKey, "B/key")
	})
}
