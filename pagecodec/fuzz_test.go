package pagecodec_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/vmigrate/vmigrate/migstream/migstreamtest"
	"github.com/vmigrate/vmigrate/pagecodec"
)

// FuzzRoundTrip: whatever bytes arrive as a "QEMU stream", the far side
// gets exactly those bytes back.
func FuzzRoundTrip(f *testing.F) {
	f.Add(newGuest(8, 7).stream(2, 4))
	f.Add(newGuest(10, 8).stream(1, 5)[:5000])
	for _, s := range recordedSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		eff := pagecodec.Effort(1 + len(in)%3) // fast, lz4 or max
		roundTrip(t, in, pagecodec.Config{CacheBytes: 16 * ps, Effort: eff})
	})
}

// FuzzDecode: arbitrary encoded bytes give an error or some output, never
// a panic, and never a cache beyond the decoder's limit.
func FuzzDecode(f *testing.F) {
	var e bytes.Buffer
	pagecodec.New(pagecodec.Config{CacheBytes: 16 * ps, Effort: pagecodec.EffortMax}).Encode(&e, bytes.NewReader(newGuest(40, 9).stream(2, 20)))
	f.Add(e.Bytes())
	f.Add([]byte("VMPC\x03\x02\x08\x14\x01a\x00"))
	// Text pages at max: page-zstd operations continuing one frame.
	rng := rand.New(rand.NewPCG(21, 21))
	b := migstreamtest.NewBuilder().Start(migstreamtest.Blocks(8)...).Part()
	for i := range 8 {
		b.Page("pc.ram", uint64(i), textPage(rng))
	}
	enc, st := roundTrip(f, b.EOS().Bytes(), pagecodec.Config{CacheBytes: 16 * ps, Effort: pagecodec.EffortMax})
	if st.Pages.Zstd.Pages == 0 {
		f.Fatalf("the zstd seed has no zstd page: %+v", st.Pages)
	}
	f.Add(enc)
	f.Fuzz(func(t *testing.T, data []byte) {
		err := pagecodec.New(pagecodec.Config{MaxCacheBytes: 64 * ps}).Decode(io.Discard, bytes.NewReader(data))
		var ce *pagecodec.CorruptError
		if err != nil && !errors.As(err, &ce) {
			t.Fatalf("decode failed with %v, not a CorruptError", err)
		}
	})
}
