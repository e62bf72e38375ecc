package migstream_test

import (
	"testing"

	"github.com/vmigrate/vmigrate/migstream/migstreamtest"
)

// recordedStreams are the streams recorded from real QEMU in testdata/.
func recordedStreams(tb testing.TB) map[string][]byte { return migstreamtest.Recorded(tb, "testdata") }
