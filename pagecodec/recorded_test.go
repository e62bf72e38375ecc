package pagecodec_test

import (
	"strings"
	"testing"

	"github.com/vmigrate/vmigrate/migstream/migstreamtest"
	"github.com/vmigrate/vmigrate/pagecodec"
)

// recordedStreams are the streams recorded from real QEMU migrations in
// ../migstream/testdata.
func recordedStreams(tb testing.TB) map[string][]byte {
	return migstreamtest.Recorded(tb, "../migstream/testdata")
}

// recordedSeeds are the first 16 KiB of each recorded stream (the fuzzer
// slows down badly on large inputs).
func recordedSeeds(tb testing.TB) [][]byte {
	var out [][]byte
	for _, s := range recordedStreams(tb) {
		out = append(out, s[:min(len(s), 16<<10)])
	}
	return out
}

// Every recorded stream comes back byte for byte.
func TestRoundTripRecorded(t *testing.T) {
	streams := recordedStreams(t)
	if len(streams) == 0 {
		t.Skip("no recorded streams in ../migstream/testdata")
	}
	for name, s := range streams {
		t.Run(name, func(t *testing.T) {
			for _, eff := range []pagecodec.Effort{pagecodec.EffortFast, pagecodec.EffortMax} {
				roundTrip(t, s, pagecodec.Config{Effort: eff})
			}
			enc, st := roundTrip(t, s, pagecodec.Config{Effort: pagecodec.EffortLZ4})
			t.Logf("%d stream bytes, %d encoded (%.1f%%); pages %+v; zero records %+v; passthrough %q",
				len(s), len(enc), 100*float64(len(enc))/float64(len(s)), st.Pages, st.ZeroRecords, st.Passthrough)
			if st.Passthrough == "" || strings.HasPrefix(st.Passthrough, "not understood") {
				t.Errorf("codec stopped parsing: %q", st.Passthrough)
			}
		})
	}
}
