package wanpath_test

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/vmigrate/vmigrate/lab/labtest"
	"github.com/vmigrate/vmigrate/migrate"
	"github.com/vmigrate/vmigrate/pagecodec"
	"github.com/vmigrate/vmigrate/qmp"
	"github.com/vmigrate/vmigrate/tunnel"
	"github.com/vmigrate/vmigrate/wanlink"
	"github.com/vmigrate/vmigrate/wanpath"
)

func codecPath(t *testing.T, dir string, link *wanlink.Config, codec wanpath.Codec) *wanpath.Path {
	k := key(t)
	path, err := wanpath.New(wanpath.Config{Dir: dir, Link: link, Tunnel: tunnel.Config{PSK: k}, DestTunnel: tunnel.Config{PSK: k},
		Codec: codec, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// A busy guest moves through the codec over a slow link: the destination
// QEMU gets the exact stream (its guest passes /verify), and the pages the
// guest rewrote went as deltas.
func TestMigrateThroughCodec(t *testing.T) {
	l := busyLab(t)
	src, dst := labtest.QMP(t, l)
	link := wanlink.Config{Bandwidth: 100e6, RTT: 20 * time.Millisecond}
	path := codecPath(t, l.Dir, &link, pagecodec.New(pagecodec.Config{}))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := migrate.Run(ctx, migrate.Options{Src: src, Dst: dst, IncomingURI: l.IncomingURI, Transport: path, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	c := res.Codec
	if c == nil {
		t.Fatal("no codec statistics in the result")
	}
	t.Logf("stream %d, encoded %d, wire %d; pages %+v; zero records %d; cpu %.0f ms; cache %d of %d bytes",
		c.StreamBytes, c.EncodedBytes, res.WireBytes, c.Pages, c.ZeroRecords.Pages, c.CPUMillis, c.CacheBytes, c.CacheMaxBytes)
	if c.StreamBytes != res.StreamBytes || c.EncodedBytes >= c.StreamBytes*4/5 {
		t.Errorf("codec took %d stream bytes (path counted %d) to %d", c.StreamBytes, res.StreamBytes, c.EncodedBytes)
	}
	if c.Pages.Delta.Pages == 0 || c.Pages.Delta.Bytes > 64*c.Pages.Delta.Pages || c.ZeroRecords.Pages == 0 || c.Passthrough != "device state" {
		t.Errorf("pages %+v, zero records %d, passthrough %q", c.Pages, c.ZeroRecords.Pages, c.Passthrough)
	}
	if res.WireBytes > c.EncodedBytes+c.EncodedBytes/10 {
		t.Errorf("the link carried %d bytes for %d encoded", res.WireBytes, c.EncodedBytes)
	}
	if c.CPUMillis <= 0 || c.DecodeMs <= 0 || c.CacheMaxBytes < 256<<20 {
		t.Errorf("cpu %v ms, decode %v ms, cache max %d", c.CPUMillis, c.DecodeMs, c.CacheMaxBytes)
	}
	intact(t, l)
}

// A source whose capabilities change the stream's format is refused before
// anything starts, and nothing is changed on either side.
func TestCodecRefusesFormatChangingCapabilities(t *testing.T) {
	l := busyLab(t)
	src, dst := labtest.QMP(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := src.MigrateSetCapabilities(ctx, qmp.Capability{Name: "multifd", State: true}); err != nil {
		t.Fatal(err)
	}
	path := codecPath(t, l.Dir, nil, pagecodec.New(pagecodec.Config{}))
	_, err := migrate.Run(ctx, migrate.Options{Src: src, Dst: dst, IncomingURI: l.IncomingURI, Transport: path, Log: zaptest.NewLogger(t)})
	var me *migrate.Error
	if !errors.Is(err, migrate.ErrStreamFormat) || !errors.As(err, &me) || me.Stage != migrate.StagePreflight || !me.SourceRunning {
		t.Fatalf("err %v: want ErrStreamFormat at preflight with the source running", err)
	}
	if !strings.Contains(err.Error(), "multifd") || !strings.Contains(err.Error(), "--codec off") {
		t.Errorf("error does not say what to do: %v", err)
	}
	if s := labtest.Status(t, dst); s != "inmigrate" {
		t.Errorf("destination %s", s)
	}
	caps, err := src.QueryMigrateCapabilities(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range caps {
		if c.Name == "multifd" && !c.State {
			t.Error("the refusal turned multifd off")
		}
	}
	intact(t, l)
}

// breakingCodec encodes normally, then cuts an unknown opcode into the
// encoded stream: the dest end's decoder refuses it.
type breakingCodec struct {
	*pagecodec.Codec
	after int64
}

func (b breakingCodec) SourceEnd() tunnel.CodecEnd {
	return breakingEnd{b.Codec.SourceEnd(), b.after}
}

type breakingEnd struct {
	tunnel.CodecEnd
	after int64
}

func (e breakingEnd) ToPeer(dst io.Writer, src io.Reader) error {
	return e.CodecEnd.ToPeer(&breaker{w: dst, after: e.after}, src)
}

type breaker struct {
	w     io.Writer
	after int64
	n     int64
}

func (b *breaker) Write(p []byte) (int, error) {
	if b.n <= b.after && b.n+int64(len(p)) > b.after {
		q := append([]byte(nil), p...)
		q[b.after-b.n] = 0x7f
		b.n += int64(len(p))
		return b.w.Write(q)
	}
	b.n += int64(len(p))
	return b.w.Write(p)
}

// An encoded stream the dest end cannot decode aborts the migration; the
// source keeps running with every page intact.
func TestCorruptCodecStreamAborts(t *testing.T) {
	l := busyLab(t)
	src, dst := labtest.QMP(t, l)
	path := codecPath(t, l.Dir, nil, breakingCodec{pagecodec.New(pagecodec.Config{}), 5}) // the first operation
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := migrate.Run(ctx, migrate.Options{Src: src, Dst: dst, IncomingURI: l.IncomingURI, Transport: path, Log: zaptest.NewLogger(t)})
	var me *migrate.Error
	if !errors.As(err, &me) || !me.SourceRunning || res.Status != migrate.StatusFailed {
		t.Fatalf("status %q, err %v: want a failure with the source running", res.Status, err)
	}
	if perr := path.Err(); perr == nil || !strings.Contains(perr.Error(), "unknown operation 0x7f") {
		t.Errorf("path error %v: want the decoder's refusal", perr)
	}
	if s := labtest.Status(t, src); s != "running" {
		t.Fatalf("source %s", s)
	}
	intact(t, l)
}

// A dest end keeps the pages of a migration; a second guest booted from
// the same image, migrated to the same dest end, finds the pages the two
// share there (its kernel, its programs, untouched memory) and sends them
// as seed references.
func TestSeedsAcrossMigrations(t *testing.T) {
	seed := filepath.Join(t.TempDir(), "seed")
	var runs []*pagecodec.Stats
	for range 2 {
		l := busyLab(t)
		src, dst := labtest.QMP(t, l)
		codec := pagecodec.New(pagecodec.Config{SeedFile: seed})
		path := codecPath(t, l.Dir, nil, codec)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		_, err := migrate.Run(ctx, migrate.Options{Src: src, Dst: dst, IncomingURI: l.IncomingURI, Transport: path, Log: zaptest.NewLogger(t)})
		cancel()
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		intact(t, l)
		if err := codec.Close(); err != nil {
			t.Fatal(err)
		}
		st := codec.Stats()
		t.Logf("stream %d, encoded %d; %d seeds announced; pages %+v", st.StreamBytes, st.EncodedBytes, st.SeedPages, st.Pages)
		runs = append(runs, &st)
	}
	if runs[0].SeedPages != 0 || runs[1].SeedPages == 0 {
		t.Errorf("seeds announced: %d then %d", runs[0].SeedPages, runs[1].SeedPages)
	}
	if p := runs[1].Pages; p.Seed.Pages < p.LZ4.Pages+p.Zstd.Pages {
		t.Errorf("second migration: %d seed pages, %d still compressed", p.Seed.Pages, p.LZ4.Pages+p.Zstd.Pages)
	}
}
