package scenarios

import (
	"bytes"
	"context"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmigrate/vmigrate/wanlink"
)

func TestNativeConfigNames(t *testing.T) {
	for _, ok := range append([]string{"multifd-zstd20", "vmigrate-fast"}, NativeConfigs...) {
		if err := CheckNativeConfig(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "multifd", "multifd-zstd0", "multifd-zstd21", "multifd-zstd01", "multifd-zstdx", "vmigrate-best", "xbzrle2"} {
		if err := CheckNativeConfig(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// Rows are medians over verified runs; the best of each side prefers
// rows whose every run completed without being forced, then the fewest
// bytes.
func TestNativeRowsAndBest(t *testing.T) {
	runs := []NativeRun{
		{Body: "text", Config: "multifd-zstd1", WireBytes: 50 << 20, TotalMS: 4000, Verified: true},
		{Body: "text", Config: "multifd-zstd1", WireBytes: 40 << 20, TotalMS: 5000, Verified: true},
		{Body: "text", Config: "multifd-zstd1", WireBytes: 45 << 20, TotalMS: 3000, Verified: true},
		{Body: "text", Config: "xbzrle", WireBytes: 10 << 20, TotalMS: 100000, Verified: true, Forced: true},
		{Body: "text", Config: "vmigrate-max", WireBytes: 30 << 20, TotalMS: 9000, Verified: true},
		{Body: "text", Config: "vmigrate-max", WireBytes: 1, TotalMS: 1, Error: "lost"},
		{Body: "text", Config: "vmigrate-auto", WireBytes: 35 << 20, TotalMS: 8000, Verified: true},
	}
	r := NativeResult{Runs: runs, Rows: nativeRows(runs, []string{"text"}, []string{"multifd-zstd1", "xbzrle", "vmigrate-max", "vmigrate-auto"}), MaxTime: "100s"}
	m := r.Rows[0]
	if m.Runs != 3 || m.WireBytes != 45<<20 || m.TotalMS != 4000 || m.WireMin != 40<<20 || m.TotalMaxMS != 5000 {
		t.Errorf("multifd row %+v", m)
	}
	if v := r.Rows[2]; v.Runs != 1 || v.Failed != 1 {
		t.Errorf("vmigrate-max row %+v", v)
	}
	q, v := r.Best("text")
	if q == nil || v == nil || q.Config != "multifd-zstd1" || v.Config != "vmigrate-auto" {
		t.Fatalf("best %+v %+v: want multifd-zstd1 (xbzrle was forced) and vmigrate-auto (a max run failed)", q, v)
	}
	md := r.Markdown()
	for _, want := range []string{"| text | xbzrle | 1 (1 forced) |", "| text | vmigrate-max | 1 (1 failed) |", "| text | multifd-zstd1 | vmigrate-auto | 0.78x | 2.00x |"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

// LinkPath relays every connection (multifd opens several) through the
// emulated link to the incoming address, byte for byte, and counts them.
func TestLinkPath(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.sock")
	ln, err := net.Listen("unix", in)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 3)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				b, _ := io.ReadAll(c)
				c.Close()
				got <- b
			}()
		}
	}()
	p := &LinkPath{Dir: dir, Link: wanlink.Config{Bandwidth: 100e6 / 8, RTT: 10 * time.Millisecond}}
	// A sampler reads the counters from before Open (as the scenarios'
	// link sampler does); -race checks that this is safe.
	stopSampler := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			p.Counts()
			p.Err()
			select {
			case <-stopSampler:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	uri, err := p.Open(context.Background(), "unix:"+in)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		close(stopSampler)
		<-sampled
		closed := make(chan struct{})
		go func() { p.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Error("Close after Err did not return")
		}
	}()
	msgs := [][]byte{bytes.Repeat([]byte("a"), 100000), []byte("second"), bytes.Repeat([]byte("c"), 5000)}
	for _, m := range msgs {
		c, err := net.Dial("unix", strings.TrimPrefix(uri, "unix:"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(m); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	var total int
	for range msgs {
		select {
		case b := <-got:
			total += len(b)
		case <-time.After(10 * time.Second):
			t.Fatal("a connection did not arrive")
		}
	}
	stream, wire := p.Counts()
	if total != 105006 || stream != 105006 || wire < stream {
		t.Errorf("delivered %d, counted %d into the link, %d across", total, stream, wire)
	}
	if err := p.Err(); err != nil {
		t.Errorf("Err: %v", err)
	}
	if _, err := (&LinkPath{Dir: dir}).Open(context.Background(), "exec:cat"); err == nil {
		t.Error("an exec: incoming URI accepted")
	}
}
