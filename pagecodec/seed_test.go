package pagecodec_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vmigrate/vmigrate/pagecodec"
)

// channel runs a codec's two ends as the tunnel would, with pipes for the
// channel's two directions and no QEMU return path, and returns what the
// destination QEMU received.
func channel(t *testing.T, src, dst *pagecodec.Codec, stream []byte) ([]byte, error) {
	t.Helper()
	encR, encW := io.Pipe() // channel, source to dest
	retR, retW := io.Pipe() // channel, dest to source
	se, de := src.SourceEnd(), dst.DestEnd()
	var out bytes.Buffer
	var wg sync.WaitGroup
	errs := make([]error, 4)
	wg.Add(4)
	go func() {
		defer wg.Done()
		errs[0] = se.ToPeer(encW, bytes.NewReader(stream))
		encW.CloseWithError(errs[0])
	}()
	go func() { defer wg.Done(); errs[1] = de.ToLocal(&out, encR); encR.CloseWithError(errs[1]) }()
	go func() { defer wg.Done(); errs[2] = de.ToPeer(retW, bytes.NewReader(nil)); retW.CloseWithError(errs[2]) }()
	go func() { defer wg.Done(); errs[3] = se.ToLocal(io.Discard, retR); retR.CloseWithError(errs[3]) }()
	wg.Wait()
	return out.Bytes(), errors.Join(errs...)
}

// The dest end keeps the pages of a stream; the next stream to it sends
// the pages it finds there as seed references, and is rebuilt exactly.
func TestSeedsFromAnEarlierStream(t *testing.T) {
	seedFile := filepath.Join(t.TempDir(), "seed")
	g := newGuest(600, 11)
	first := g.stream(1, 50)

	// No seed file yet: nothing announced, nothing found.
	c1 := pagecodec.New(pagecodec.Config{SeedFile: seedFile})
	out, err := channel(t, c1, c1, first)
	if err != nil || !bytes.Equal(out, first) {
		t.Fatalf("first stream: %v, exact %v", err, bytes.Equal(out, first))
	}
	if err := c1.Close(); err != nil {
		t.Fatal(err)
	}
	if st := c1.Stats(); st.SeedPages != 0 || st.Pages.Seed.Pages != 0 {
		t.Errorf("first stream: %d seeds announced, %d used", st.SeedPages, st.Pages.Seed.Pages)
	}

	// The same guest a while later, as after a failed attempt: most pages
	// are already at the destination.
	g.dirty(100)
	second := g.stream(1, 50)
	src, dst := pagecodec.New(pagecodec.Config{}), pagecodec.New(pagecodec.Config{SeedFile: seedFile})
	out, err = channel(t, src, dst, second)
	if err != nil || !bytes.Equal(out, second) {
		t.Fatalf("second stream: %v, exact %v", err, bytes.Equal(out, second))
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	st := src.Stats()
	t.Logf("second stream: %d bytes encoded to %d; %d seeds announced; pages %+v", st.StreamBytes, st.EncodedBytes, st.SeedPages, st.Pages)
	if st.SeedPages < 300 || st.Pages.Seed.Pages < 200 {
		t.Errorf("seeds: %d announced, %d pages found there", st.SeedPages, st.Pages.Seed.Pages)
	}
	_, plain := roundTrip(t, second, pagecodec.Config{})
	if st.EncodedBytes > plain.EncodedBytes/3 {
		t.Errorf("with seeds %d bytes, without %d", st.EncodedBytes, plain.EncodedBytes)
	}
}

// A seed file that is not one is reported and ignored: the stream still
// goes through.
func TestBadSeedFileIgnored(t *testing.T) {
	seedFile := filepath.Join(t.TempDir(), "seed")
	if err := os.WriteFile(seedFile, []byte("VMPS\x01\xff\xff\xff\xffnot pages"), 0o600); err != nil {
		t.Fatal(err)
	}
	stream := newGuest(100, 12).stream(1, 10)
	src, dst := pagecodec.New(pagecodec.Config{}), pagecodec.New(pagecodec.Config{SeedFile: seedFile, MaxCacheBytes: 1 << 30})
	out, err := channel(t, src, dst, stream)
	if err != nil || !bytes.Equal(out, stream) {
		t.Fatalf("%v, exact %v", err, bytes.Equal(out, stream))
	}
	dst.Close()
	if st := dst.Stats(); !strings.Contains(st.SeedError, "seed file") {
		t.Errorf("seed error %q", st.SeedError)
	}
	// The stream's own pages replaced the broken file.
	src2, dst2 := pagecodec.New(pagecodec.Config{}), pagecodec.New(pagecodec.Config{SeedFile: seedFile})
	if out, err := channel(t, src2, dst2, stream); err != nil || !bytes.Equal(out, stream) {
		t.Fatalf("again: %v", err)
	}
	if err := dst2.Close(); err != nil {
		t.Fatal(err)
	}
	if st := src2.Stats(); st.Pages.Seed.Pages == 0 {
		t.Errorf("no seed used the second time: %+v", st.Pages)
	}
}
