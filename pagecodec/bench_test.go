package pagecodec_test

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/vmigrate/vmigrate/migstream"
	"github.com/vmigrate/vmigrate/migstream/migstreamtest"
	"github.com/vmigrate/vmigrate/pagecodec"
)

// benchPages is the number of pages of each kind in a benchmark stream.
const benchPages = 2048

// corpus holds real contents to cut pages from, as a guest's page cache
// and program text would hold: Go's own sources (text) and this test's
// executable and Go's own programs (binary).
var corpus struct {
	once         sync.Once
	text, binary []byte
}

func loadCorpus(tb testing.TB) {
	corpus.once.Do(func() {
		files, _ := filepath.Glob(filepath.Join(runtime.GOROOT(), "src", "*", "*", "*.go"))
		for _, f := range files {
			if len(corpus.text) > 2*benchPages*ps {
				break
			}
			b, err := os.ReadFile(f)
			if err == nil {
				corpus.text = append(corpus.text, b...)
			}
		}
		exe, _ := os.Executable()
		for _, f := range []string{exe, filepath.Join(runtime.GOROOT(), "bin", "go"), filepath.Join(runtime.GOROOT(), "bin", "gofmt")} {
			if b, err := os.ReadFile(f); err == nil {
				corpus.binary = append(corpus.binary, b...)
			}
		}
	})
	if len(corpus.text) < benchPages*ps || len(corpus.binary) < benchPages*ps {
		tb.Skip("no Go sources or test binary to cut pages from")
	}
}

// corpusPage is page i of a corpus.
func corpusPage(c []byte, i int) []byte {
	off := i * ps
	return bytes.Clone(c[off : off+ps])
}

// benchStream is a stream of PAGE records: a first pass over pages of the
// given kinds, then, for "resent", the first kind's pages again with a
// few bytes changed (as memdirty or a busy heap rewrites them).
func benchStream(tb testing.TB, kinds ...string) []byte {
	loadCorpus(tb)
	rng := rand.New(rand.NewPCG(42, 42))
	b := migstreamtest.NewBuilder().Start(migstreamtest.Blocks(uint64(len(kinds)+1) * benchPages)...).Part()
	var first [][]byte
	page := uint64(0)
	for _, k := range kinds {
		for i := range benchPages {
			var p []byte
			switch k {
			case "zero":
				p = make([]byte, ps)
			case "text":
				p = corpusPage(corpus.text, i)
			case "binary":
				p = corpusPage(corpus.binary, i)
			case "random":
				p = randomPage(rng)
			case "duplicate":
				p = bytes.Clone(first[rng.IntN(len(first))])
			case "resent":
				continue
			}
			if first == nil || len(first) < benchPages {
				first = append(first, p)
			}
			b.Page("pc.ram", page, p)
			page++
		}
	}
	for _, k := range kinds {
		if k != "resent" {
			continue
		}
		b.EOS().Part()
		for i, p := range first {
			p = bytes.Clone(p)
			for range 4 {
				p[rng.IntN(ps)]++
			}
			b.Page("pc.ram", uint64(i), p)
		}
	}
	return b.EOS().Bytes()
}

var benchKinds = []struct {
	name  string
	kinds []string
}{
	{"zero", []string{"zero"}},
	{"text", []string{"text"}},
	{"binary", []string{"binary"}},
	{"random", []string{"random"}},
	{"duplicate", []string{"random", "duplicate"}},
	{"resent", []string{"random", "resent"}},
	{"mixed", []string{"zero", "text", "binary", "random", "resent"}},
}

// BenchmarkEncode measures encoding throughput in stream bytes per second
// on one goroutine at each fixed effort; the encoded size is reported as a
// percentage. (Auto moves between them with the link, which a benchmark
// does not have; TestEffortAutoFollowsLink covers it.)
func BenchmarkEncode(b *testing.B) {
	for _, k := range benchKinds {
		for _, eff := range []pagecodec.Effort{pagecodec.EffortFast, pagecodec.EffortLZ4, pagecodec.EffortMax} {
			b.Run(k.name+"/"+eff.String(), func(b *testing.B) {
				in := benchStream(b, k.kinds...)
				c := pagecodec.New(pagecodec.Config{Effort: eff})
				var out countWriter
				b.SetBytes(int64(len(in)))
				for b.Loop() {
					out = 0
					if err := c.Encode(&out, bytes.NewReader(in)); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(100*float64(out)/float64(len(in)), "%size")
				reportPerCPU(b, len(in), c.Stats().CPU)
			})
		}
	}
}

// BenchmarkDecode measures decoding throughput in rebuilt stream bytes per
// second, of streams encoded at effort lz4 and max.
func BenchmarkDecode(b *testing.B) {
	for _, k := range benchKinds {
		for _, eff := range []pagecodec.Effort{pagecodec.EffortLZ4, pagecodec.EffortMax} {
			b.Run(k.name+"/"+eff.String(), func(b *testing.B) {
				in := benchStream(b, k.kinds...)
				c := pagecodec.New(pagecodec.Config{Effort: eff})
				var enc bytes.Buffer
				if err := c.Encode(&enc, bytes.NewReader(in)); err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(len(in)))
				for b.Loop() {
					if err := c.Decode(io.Discard, bytes.NewReader(enc.Bytes())); err != nil {
						b.Fatal(err)
					}
				}
				reportPerCPU(b, len(in), c.Stats().DecodeCPU)
			})
		}
	}
}

// BenchmarkMemoryPerGB encodes the first pass of a guest whose RAM is all
// pages with contents and reports the encoder's heap per GiB of guest RAM,
// with the default cache (the whole guest, up to 2 GiB).
func BenchmarkMemoryPerGB(b *testing.B) {
	const guestPages = 32768 // 128 MiB
	rng := rand.New(rand.NewPCG(7, 7))
	bl := migstreamtest.NewBuilder().Start(migstreamtest.Blocks(guestPages)...).Part()
	for i := range uint64(guestPages) {
		if i%2 == 0 {
			bl.Page("pc.ram", i, textPage(rng))
		} else {
			bl.Page("pc.ram", i, randomPage(rng))
		}
	}
	in := bl.EOS().Bytes()
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		c := pagecodec.New(pagecodec.Config{})
		var held countWriter
		if err := c.Encode(&held, bytes.NewReader(in)); err != nil {
			b.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		st := c.Stats()
		gib := float64(guestPages*migstream.PageSize) / (1 << 30)
		b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/(1<<20)/gib, "MiB-alloc/GiB")
		b.ReportMetric(float64(st.CacheBytes)/(1<<20)/gib, "MiB-cache/GiB")
	}
}

// reportPerCPU reports stream bytes per second of the codec thread's CPU
// time: the throughput of one core, whatever else runs on the machine.
func reportPerCPU(b *testing.B, size int, cpu time.Duration) {
	if cpu > 0 {
		b.ReportMetric(float64(size)*float64(b.N)/cpu.Seconds()/1e6, "MB/cpu-s")
	}
}

type countWriter int64

func (w *countWriter) Write(p []byte) (int, error) { *w += countWriter(len(p)); return len(p), nil }
