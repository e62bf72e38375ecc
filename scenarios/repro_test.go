package scenarios

import (
	"compress/gzip"
	"context"
	"image/png"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmigrate/vmigrate/loadgen"
	"github.com/vmigrate/vmigrate/migrate"
)

// loadRecord is a plausible loaded run: answers every quarter second,
// slower and failing during the migration from 10 s to 20 s.
func loadRecord() LoadRecord {
	r := LoadRecord{MigStartS: 10, SwitchoverS: 19.5, MigEndS: 20, LoadEndS: 30}
	for i := range 120 {
		start := time.Duration(i) * sampleEvery
		b := loadgen.Bucket{Start: start, OK: 750, MeanMS: 1, P99MS: 3}
		if t := start.Seconds(); t >= 10 && t < 20 {
			b.MeanMS, b.P99MS, b.Errors = 5, 40, 2
		}
		r.Buckets = append(r.Buckets, b)
		mbps := 0.0
		if t := start.Seconds(); t >= 10 && t < 20 {
			mbps = 900
		}
		r.Link = append(r.Link, LinkSample{T: (start + sampleEvery).Seconds(), Mbps: mbps})
	}
	return r
}

func ufpeRunFor(size int64, config string, rep int, totalMS int64, during, outside float64, errs int) UFPERun {
	r := UFPERun{MemBytes: size, Config: config, Rep: rep, LoadRecord: loadRecord(),
		MigrationRecord: MigrationRecord{TotalMS: totalMS, DowntimeMS: 100, ObservedMS: 300, WireBytes: size / 2, Verified: true}}
	r.Rate, r.CapacityRPS = 300, 600+float64(rep)
	r.During = loadgen.Summary{Requests: 30000, OK: 30000 - errs, Errors: map[loadgen.Outcome]int{loadgen.OutcomeTimeout: errs}, MeanMS: during, P99MS: during * 10, ReplyRate: 2900, SendRate: 3000}
	r.Outside = loadgen.Summary{Requests: 60000, OK: 60000, MeanMS: outside, P99MS: outside * 3, ReplyRate: 3000, SendRate: 3000}
	return r
}

// The rows are medians over verified runs per size and configuration
// (errors summed: 3+5+4),
// the trend check reads them in size order, and the report writes every
// plot it names.
func TestUFPERowsTrendAndReport(t *testing.T) {
	const g = 1 << 30
	runs := []UFPERun{
		ufpeRunFor(g/2, "qemu-default", 1, 10_000, 4, 1, 3),
		ufpeRunFor(g/2, "qemu-default", 2, 12_000, 6, 1, 5),
		ufpeRunFor(g/2, "qemu-default", 3, 11_000, 5, 2, 4),
		ufpeRunFor(g, "qemu-default", 1, 20_000, 5, 1, 0),
		ufpeRunFor(2*g, "qemu-default", 1, 15_000, 5, 1, 0), // shorter than 1G: the trend breaks
		ufpeRunFor(g/2, "vmigrate-auto", 1, 8_000, 2, 1, 0),
		ufpeRunFor(g, "vmigrate-auto", 1, 9_000, 2, 1, 0),
	}
	failed := ufpeRunFor(g, "vmigrate-auto", 2, 1, 1, 1, 0)
	failed.Verified, failed.Error = false, "guest lost"
	runs = append(runs, failed)
	r := UFPEResult{Lab: "qmp", Server: UFPEServer, Link: "1gbit", Rate: 3000, Timeout: "2s", Runs: runs, Rows: UFPERows(runs)}
	if len(r.Rows) != 5 {
		t.Fatalf("%d rows: %+v", len(r.Rows), r.Rows)
	}
	q := r.Rows[0]
	if q.Runs != 3 || q.TotalMS != 11_000 || q.TotalMinMS != 10_000 || q.TotalMaxMS != 12_000 || q.DuringMeanMS != 5 || q.DuringErrors != 12 || q.OutMeanMS != 1 {
		t.Errorf("512M qemu-default %+v", q)
	}
	if v := r.Rows[4]; v.Config != "vmigrate-auto" || v.MemBytes != g || v.Runs != 1 || v.Failed != 1 {
		t.Errorf("1G vmigrate-auto %+v", v)
	}
	trend := strings.Join(r.Trend(), "\n")
	for _, want := range []string{"qemu-default: migration time does not grow with RAM at every step", "vmigrate-auto: migration time grows with RAM, as in the study (512M 8.0 s, 1G 9.0 s)"} {
		if !strings.Contains(trend, want) {
			t.Errorf("trend lacks %q:\n%s", want, trend)
		}
	}
	dir := t.TempDir()
	if err := WriteUFPEReport(dir, r, "header\n"); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "ufpe.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"header\n", "| 512M | qemu-default | 3 | 602 / 300 | 11.0 s (10.0-12.0) | 100 / 300 ms |", "| 1G | vmigrate-auto | 1 (1 failed, 0 forced) |", "5.0 / 1.0 ms", "| 12 / 0 |"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("ufpe.md lacks %q:\n%s", want, md)
		}
	}
	checkPlots(t, dir, string(md), []string{"ufpe-time.png", "ufpe-response.png", "ufpe-512M-qemu-default-response.png", "ufpe-2G-qemu-default-throughput.png", "ufpe-1G-vmigrate-auto-throughput.png"})
	if _, err := os.Stat(filepath.Join(dir, "ufpe.json")); err != nil {
		t.Error(err)
	}
}

// checkPlots checks that each PNG exists, decodes, and that the markdown
// shows it.
func checkPlots(t *testing.T, dir, md string, names []string) {
	t.Helper()
	for _, n := range names {
		f, err := os.Open(filepath.Join(dir, n))
		if err != nil {
			t.Errorf("plot %s: %v", n, err)
			continue
		}
		if _, err := png.Decode(f); err != nil {
			t.Errorf("plot %s: %v", n, err)
		}
		f.Close()
		if !strings.Contains(md, "]("+n+")") {
			t.Errorf("the markdown does not show %s", n)
		}
	}
}

// CloudNet's rows, ratios against the paper's, and the report.
func TestCloudNetRowsRatiosAndReport(t *testing.T) {
	run := func(w, mode string, rep int, wire, total, down, obs int64) CloudNetRun {
		return CloudNetRun{Workload: w, Mode: mode, Rep: rep, MigrationRecord: MigrationRecord{WireBytes: wire, TotalMS: total, DowntimeMS: down, ObservedMS: obs, Verified: true}}
	}
	runs := []CloudNetRun{
		run(CloudNetTPCW, ModeDefault, 1, 1000, 100_000, 3000, 3500),
		run(CloudNetTPCW, ModeOptimised, 1, 300, 40_000, 100, 350),
		run(CloudNetTPCW, ModeDefault, 2, 1200, 120_000, 4000, 4200),
		run(CloudNetTPCW, ModeOptimised, 2, 200, 30_000, 50, 300),
		run(CloudNetSPECjbb, ModeDefault, 1, 800, 90_000, 2000, 2500),
	}
	r := CloudNetResult{Lab: "qmp", Link: "100mbit", MemBytes: 1 << 30, MaxTime: "200s", Default: "qemu-default", Optimised: "vmigrate-auto", Runs: runs, Rows: CloudNetRows(runs)}
	rs := r.Ratios()
	if len(rs) != 1 || rs[0].Workload != CloudNetTPCW {
		t.Fatalf("ratios %+v: want tpcw only (specjbb has no optimised run)", rs)
	}
	x := rs[0]
	// Lower middles: default 1000 B, 100 s, 3000/3500 ms; optimised 200 B, 30 s, 50/300 ms.
	if math.Abs(x.Data-0.2) > 1e-9 || math.Abs(x.Total-0.3) > 1e-9 || math.Abs(x.Pause-300.0/3500) > 1e-9 || math.Abs(x.PaperData-0.6) > 1e-9 {
		t.Errorf("ratios %+v", x)
	}
	dir := t.TempDir()
	if err := WriteCloudNetReport(dir, r, ""); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "cloudnet.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| tpcw | default | 2 |", "1.5 GB, 135 s, 3.7 s |", "| tpcw | 0.20 (paper 0.60) | 0.30 (paper 0.58) |", "| specjbb | default | 1 |"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("cloudnet.md lacks %q:\n%s", want, md)
		}
	}
	checkPlots(t, dir, string(md), []string{"cloudnet-ratios.png", "cloudnet-data.png", "cloudnet-time.png"})
}

// The workloads stand for CloudNet's within the guest's RAM, and an
// unknown one is refused by name.
func TestCloudNetWorkloads(t *testing.T) {
	for _, w := range CloudNetWorkloads {
		c, _, err := cloudNetWorkload(w, 1<<30, 200)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err != nil || c.WSSBytes > 3<<28 || c.WSSBytes%4096 != 0 {
			t.Errorf("%s: %+v: %v", w, c, err)
		}
	}
	if _, _, err := cloudNetWorkload("tpc-c", 1<<30, 0); err == nil || !strings.Contains(err.Error(), "tpc-c") {
		t.Errorf("tpc-c: %v", err)
	}
}

// outside summarises the requests before and after the migration, its
// reply rate over their time only.
func TestOutside(t *testing.T) {
	r := &loadgen.Result{End: 10 * time.Second}
	for i := range 100 { // one request every 100 ms
		q := loadgen.Request{Due: time.Duration(i) * 100 * time.Millisecond, Outcome: loadgen.OutcomeOK, Latency: time.Millisecond}
		if q.Due >= 4*time.Second && q.Due < 6*time.Second {
			q.Outcome, q.Latency = loadgen.OutcomeTimeout, 0
		}
		q.Sent = q.Due
		r.Requests = append(r.Requests, q)
	}
	o := outside(r, 4*time.Second, 6*time.Second)
	if o.Requests != 80 || o.OK != 80 || failed(o) != 0 || math.Abs(o.ReplyRate-10) > 1e-9 {
		t.Errorf("outside %+v: want 80 ok at 10 replies/s", o)
	}
	d := r.Summary(4*time.Second, 6*time.Second)
	if failed(d) != 20 {
		t.Errorf("during %+v", d)
	}
}

// capacity counts what a real server answers in a closed loop, and
// says so when it answers nothing.
func TestCapacity(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(10 * time.Millisecond)
		w.Write([]byte("page"))
	}))
	defer srv.Close()
	var d net.Dialer
	env := LabEnv{Dial: d.DialContext}
	c, err := capacity(context.Background(), env, srv.URL, 4, time.Second)
	// 4 clients, 10 ms a request: at most 400/s.
	if err != nil || c < 100 || c > 400 {
		t.Errorf("capacity %.0f/s, %v: want 100 to 400", c, err)
	}
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }))
	defer bad.Close()
	if _, err := capacity(context.Background(), env, bad.URL, 2, 300*time.Millisecond); err == nil || !strings.Contains(err.Error(), "no request") {
		t.Errorf("a server answering 503: %v", err)
	}
}

// A loaded run against a real server on loopback: the capacity caps the
// rate, the phases sit where the run put them, every phase has requests,
// the link sampler sees the bytes of the migration only, and the
// requests are kept as CSV.
func TestLoaded(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(5 * time.Millisecond)
		w.Write([]byte("page"))
	}))
	defer srv.Close()
	var wire atomic.Int64
	var d net.Dialer
	env := LabEnv{GuestIP: strings.TrimPrefix(srv.URL, "http://"), Dial: d.DialContext, Wire: wire.Load}
	keep := filepath.Join(t.TempDir(), "requests.csv.gz")
	var rec LoadRecord
	lo := LoadOptions{Rate: 100000, Share: 0.5, Timeout: time.Second, Before: time.Second, After: time.Second, Span: time.Minute, Keep: keep}
	after, err := loaded(lo, &rec)(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	// The "migration": 1 s, 10 MB over the link.
	for range 10 {
		time.Sleep(100 * time.Millisecond)
		wire.Add(1e6)
	}
	after(&DemoResult{Result: migrate.Result{TotalMS: 1000, SwitchoverMS: 900, DowntimeMS: 50}})
	if rec.CapacityRPS < 100 || rec.Rate > rec.CapacityRPS/2+1 || rec.Rate < 1 {
		t.Errorf("capacity %.0f/s, rate %.0f/s: want the rate at half the capacity", rec.CapacityRPS, rec.Rate)
	}
	if math.Abs(rec.MigStartS-1) > 0.2 || math.Abs(rec.MigEndS-rec.MigStartS-1) > 1e-9 || math.Abs(rec.SwitchoverS-rec.MigStartS-0.9) > 1e-9 || rec.LoadEndS < rec.MigEndS+0.9 {
		t.Errorf("phases: start %.2f, switchover %.2f, end %.2f, load end %.2f", rec.MigStartS, rec.SwitchoverS, rec.MigEndS, rec.LoadEndS)
	}
	for name, s := range map[string]loadgen.Summary{"before": rec.Before, "during": rec.During, "after": rec.After} {
		if s.Requests == 0 || s.OK != s.Requests {
			t.Errorf("%s: %+v", name, s)
		}
	}
	if rec.Outside.Requests != rec.Before.Requests+rec.After.Requests {
		t.Errorf("outside %d requests, before %d + after %d", rec.Outside.Requests, rec.Before.Requests, rec.After.Requests)
	}
	// 10 MB in about a second: 80 Mbit/s on average over the migration,
	// nothing outside it.
	if rec.LinkMeanMbps < 40 || rec.LinkMeanMbps > 160 || rec.LinkPeakMbps < rec.LinkMeanMbps {
		t.Errorf("link mean %.0f Mbit/s, peak %.0f", rec.LinkMeanMbps, rec.LinkPeakMbps)
	}
	for _, s := range rec.Link {
		if (s.T < rec.MigStartS-0.05 || s.T > rec.MigEndS+0.5) && s.Mbps != 0 {
			t.Errorf("link %.0f Mbit/s at %.2f s, outside the migration", s.Mbps, s.T)
		}
	}
	f, err := os.Open(rec.RequestsFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	all := rec.Before.Requests + rec.During.Requests + rec.After.Requests
	if n := strings.Count(string(lines), "\n"); n != all+1 || !strings.HasPrefix(string(lines), "due_ms,sent_ms,latency_ms,outcome,status\n") || !strings.Contains(string(lines), ",ok,200\n") {
		t.Errorf("%d lines for %d requests:\n%.200s", n, all, lines)
	}
}
