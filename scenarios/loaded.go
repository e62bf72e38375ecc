package scenarios

import (
	"compress/gzip"
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/vmigrate/vmigrate/loadgen"
	"github.com/vmigrate/vmigrate/stopcopy"
	"github.com/vmigrate/vmigrate/wanlink"
)

// A loaded run is a migration with clients: vmigrate's load generator
// sends requests to the guest's web server at a fixed rate from Before
// ahead of the migration until After past its end, while the emulated
// link's byte count is sampled. Its times are offsets from the load's
// start (the load clock).

// LoadOptions configure the clients of a loaded run.
type LoadOptions struct {
	Rate float64 // requests per second (0: no clients, the link is still sampled)
	// Share, when above 0, makes the rate at most Share of the requests
	// per second the guest answers in a closed loop, measured first
	// (capacity): an open-loop rate beyond what the server can answer
	// only measures its queue.
	Share   float64
	Timeout time.Duration // per request
	Path    string        // the URL path on the guest (default /)
	Before  time.Duration // load before the migration starts
	After   time.Duration // load after the guest was checked
	// Span bounds the whole load (Before, the migration, After); the
	// load ends early when the run ends (loadedMigration sets it).
	Span time.Duration
	// Keep, when set, is where the requests are written (gzip'd CSV).
	Keep string
}

// LinkSample is the emulated link's throughput over one sampling interval.
type LinkSample struct {
	T    float64 `json:"t_s"`  // the interval's end on the load clock
	Mbps float64 `json:"mbps"` // both ways
}

// LoadRecord is what a loaded run measured besides the migration.
type LoadRecord struct {
	// MigStartS, SwitchoverS and MigEndS place the migration on the load
	// clock: the migrate command, the source's stop, the destination
	// running. LoadEndS is when the load stopped.
	MigStartS   float64 `json:"mig_start_s"`
	SwitchoverS float64 `json:"switchover_s"`
	MigEndS     float64 `json:"mig_end_s"`
	LoadEndS    float64 `json:"load_end_s"`
	// Before, During and After summarise the requests due in each phase;
	// Outside is Before and After together.
	Before  loadgen.Summary `json:"before"`
	During  loadgen.Summary `json:"during"`
	After   loadgen.Summary `json:"after"`
	Outside loadgen.Summary `json:"outside"`
	// Buckets are the requests by quarter second, for the plots.
	Buckets []loadgen.Bucket `json:"buckets,omitempty"`
	// Link is the link's throughput by quarter second; LinkMeanMbps is
	// its mean over the migration, LinkPeakMbps its highest sample.
	Link []LinkSample `json:"link"`
	// CapacityRPS is what the guest answered in a closed loop before the
	// run (LoadOptions.Share); Rate is the open-loop rate used.
	CapacityRPS  float64 `json:"capacity_rps,omitempty"`
	Rate         float64 `json:"rate"`
	LinkMeanMbps float64 `json:"link_mean_mbps"`
	LinkPeakMbps float64 `json:"link_peak_mbps"`
	RequestsFile string  `json:"requests_file,omitempty"`
	// LoadError is why the load or its record failed, if it did.
	LoadError string `json:"load_error,omitempty"`
}

// MigrationRecord is what a reproduction keeps of one migration.
type MigrationRecord struct {
	Lab        string `json:"lab"` // qmp or libvirt
	Path       string `json:"path"`
	QEMU       string `json:"qemu"`
	Accel      string `json:"accel"`
	WireBytes  int64  `json:"wire_bytes"`
	TotalMS    int64  `json:"total_ms"`
	DowntimeMS int64  `json:"downtime_ms"`
	ObservedMS int64  `json:"observed_downtime_ms"`
	Forced     bool   `json:"forced"` // the budget ran out: stopped by force
	Verified   bool   `json:"verified"`
	Error      string `json:"error,omitempty"`
	// Result is the demo's full result.
	Result *DemoResult `json:"result,omitempty"`
}

// migrateRecorded runs d and records the migration; an error is returned
// only when it stops the experiment (stopsExperiment), a failed run is
// recorded.
func migrateRecorded(ctx context.Context, d DemoOptions, rec *MigrationRecord) error {
	rec.Lab = labName(d.Libvirt)
	dr, err := Demo(ctx, d)
	if err := stopsExperiment(ctx, dr, err); err != nil {
		return err
	}
	rec.Result = &dr
	rec.Path, rec.QEMU, rec.Accel = dr.Path, dr.QEMU.Version, dr.Accel
	rec.WireBytes, rec.TotalMS, rec.DowntimeMS, rec.ObservedMS = dr.WireBytes, dr.TotalMS, dr.DowntimeMS, dr.ObservedDowntimeMS
	rec.Verified = dr.Verified
	rec.Forced = dr.Decision != nil && dr.Decision.Rule == stopcopy.RuleBudgetTime
	if err != nil {
		rec.Error = err.Error()
	}
	return nil
}

// loadedMigration migrates d's guest in a configuration of
// NativeConfigs (configPath) under the load lo, recording both.
func loadedMigration(ctx context.Context, d DemoOptions, config string, link wanlink.Config, maxTime time.Duration, lo LoadOptions, mig *MigrationRecord, load *LoadRecord) error {
	dir, err := os.MkdirTemp("", "vmload")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	closePath, err := configPath(&d, config, dir, link, maxTime, d.MemBytes, d.Log)
	if err != nil {
		return err
	}
	defer closePath()
	// The load outlasts any migration: the run stops it.
	lo.Span = lo.Before + maxTime + lo.After + 5*time.Minute
	d.Around = loaded(lo, load)
	return migrateRecorded(ctx, d, mig)
}

// RowStats are a row's migrations: medians over its verified runs, with
// the min and max of bytes and time.
type RowStats struct {
	Runs       int   `json:"runs"`
	Failed     int   `json:"failed"`
	Forced     int   `json:"forced"`
	WireBytes  int64 `json:"wire_bytes"`
	WireMin    int64 `json:"wire_bytes_min"`
	WireMax    int64 `json:"wire_bytes_max"`
	TotalMS    int64 `json:"total_ms"`
	TotalMinMS int64 `json:"total_min_ms"`
	TotalMaxMS int64 `json:"total_max_ms"`
	DowntimeMS int64 `json:"downtime_ms"`
	ObservedMS int64 `json:"observed_downtime_ms"`
}

// rowAcc gathers a row's runs for RowStats.
type rowAcc struct {
	s                       RowStats
	wire, total, down, obsv []int64
}

// add counts a run; it reports whether the run was verified (and so
// counts towards the medians).
func (a *rowAcc) add(verified, forced bool, wire, total, down, obs int64) bool {
	if !verified {
		a.s.Failed++
		return false
	}
	a.s.Runs++
	if forced {
		a.s.Forced++
	}
	a.wire, a.total, a.down, a.obsv = append(a.wire, wire), append(a.total, total), append(a.down, down), append(a.obsv, obs)
	return true
}

func (a *rowAcc) addRecord(m MigrationRecord) bool {
	return a.add(m.Verified && m.Error == "", m.Forced, m.WireBytes, m.TotalMS, m.DowntimeMS, m.ObservedMS)
}

// stats are the medians of the verified runs added.
func (a *rowAcc) stats() RowStats {
	s := a.s
	if s.Runs > 0 {
		s.WireBytes, s.WireMin, s.WireMax = median(a.wire), slices.Min(a.wire), slices.Max(a.wire)
		s.TotalMS, s.TotalMinMS, s.TotalMaxMS = median(a.total), slices.Min(a.total), slices.Max(a.total)
		s.DowntimeMS, s.ObservedMS = median(a.down), median(a.obsv)
	}
	return s
}

// groupBy groups runs by key, the keys in the order the runs first name
// them.
func groupBy[K comparable, R any](runs []R, key func(R) K) ([]K, map[K][]R) {
	var keys []K
	by := map[K][]R{}
	for _, r := range runs {
		k := key(r)
		if _, ok := by[k]; !ok {
			keys = append(keys, k)
		}
		by[k] = append(by[k], r)
	}
	return keys, by
}

// rounds runs an experiment's grid: for each outer value, repeat rounds,
// each round every inner value once (interleaved, so that a drift of the
// machine spreads over all of them), calling each after every run.
func rounds[O, I, R any](ctx context.Context, outer []O, repeat int, inner []I, run func(O, I, int) (R, error), each func(R)) ([]R, error) {
	var out []R
	for _, o := range outer {
		for rep := 1; rep <= repeat; rep++ {
			for _, i := range inner {
				if err := ctx.Err(); err != nil {
					return out, err
				}
				r, err := run(o, i, rep)
				if err != nil {
					return out, err
				}
				out = append(out, r)
				if each != nil {
					each(r)
				}
			}
		}
	}
	return out, nil
}

const (
	sampleEvery = 250 * time.Millisecond
	// capacityConns and capacityFor are the closed loop that measures
	// the guest's capacity.
	capacityConns = 16
	capacityFor   = 3 * time.Second
)

// loaded starts the clients and the link sampler on a settled guest and
// returns the DemoOptions.Around that does so; rec is filled in when the
// run ends.
func loaded(o LoadOptions, rec *LoadRecord) func(ctx context.Context, env LabEnv) (func(*DemoResult), error) {
	return func(ctx context.Context, env LabEnv) (func(*DemoResult), error) {
		path := o.Path
		if path == "" {
			path = "/"
		}
		rate := o.Rate
		if rate > 0 && o.Share > 0 {
			c, err := capacity(ctx, env, "http://"+env.GuestIP+path, capacityConns, capacityFor)
			if err != nil {
				return nil, fmt.Errorf("load: %w", err)
			}
			rec.CapacityRPS = c
			rate = min(rate, max(1, math.Round(c*o.Share)))
		}
		rec.Rate = rate
		lctx, cancel := context.WithCancel(ctx)
		start := time.Now()
		var (
			wg   sync.WaitGroup
			lres *loadgen.Result
			lerr error
		)
		if rate > 0 {
			cfg := loadgen.Config{URL: "http://" + env.GuestIP + path, Rate: rate, Duration: o.Span, Timeout: o.Timeout, Dial: env.Dial}
			wg.Go(func() { lres, lerr = loadgen.Run(lctx, cfg) })
		}
		var samples []LinkSample
		wg.Go(func() {
			t := time.NewTicker(sampleEvery)
			defer t.Stop()
			last, lastT := env.Wire(), time.Now()
			for {
				select {
				case <-lctx.Done():
					return
				case now := <-t.C:
					w := env.Wire()
					samples = append(samples, LinkSample{T: now.Sub(start).Seconds(), Mbps: float64(w-last) * 8 / 1e6 / now.Sub(lastT).Seconds()})
					last, lastT = w, now
				}
			}
		})
		select {
		case <-ctx.Done():
			cancel()
			wg.Wait()
			return nil, ctx.Err()
		case <-time.After(o.Before):
		}
		migStart := time.Now()
		return func(res *DemoResult) {
			select {
			case <-ctx.Done():
			case <-time.After(o.After):
			}
			end := time.Now()
			cancel()
			wg.Wait()
			rec.fill(o, lres, lerr, start, migStart, end, res, samples)
		}, nil
	}
}

// fill computes the record once the load and the migration are over.
func (rec *LoadRecord) fill(o LoadOptions, lres *loadgen.Result, lerr error, start, migStart, end time.Time, res *DemoResult, samples []LinkSample) {
	rec.Link = samples
	if lres != nil && !lres.Start.IsZero() {
		// The load's own clock starts a moment after the sampler's.
		shift := lres.Start.Sub(start).Seconds()
		for i := range rec.Link {
			rec.Link[i].T -= shift
		}
		start = lres.Start
	}
	rec.MigStartS = migStart.Sub(start).Seconds()
	rec.LoadEndS = end.Sub(start).Seconds()
	rec.MigEndS = rec.MigStartS + float64(res.TotalMS)/1000
	switch {
	case res.SwitchoverMS > 0:
		rec.SwitchoverS = rec.MigStartS + float64(res.SwitchoverMS)/1000
	default: // virsh: libvirt does not say; its downtime ends the run
		rec.SwitchoverS = rec.MigEndS - float64(res.DowntimeMS)/1000
	}
	var sum float64
	var n int
	for _, s := range rec.Link {
		rec.LinkPeakMbps = max(rec.LinkPeakMbps, s.Mbps)
		if s.T > rec.MigStartS && s.T <= rec.MigEndS+sampleEvery.Seconds() {
			sum += s.Mbps
			n++
		}
	}
	if n > 0 {
		rec.LinkMeanMbps = sum / float64(n)
	}
	if lerr != nil && lres == nil {
		rec.LoadError = lerr.Error()
		return
	}
	if lres == nil {
		return
	}
	from, to := secDur(rec.MigStartS), secDur(rec.MigEndS)
	rec.Before = lres.Summary(0, from)
	rec.During = lres.Summary(from, to)
	rec.After = lres.Summary(to, 0)
	rec.Outside = outside(lres, from, to)
	rec.Buckets = lres.Buckets(sampleEvery)
	// A last quarter second the load did not fill would read as a drop.
	if n := len(rec.Buckets); n > 0 && rec.Buckets[n-1].Start+sampleEvery > lres.End {
		rec.Buckets = rec.Buckets[:n-1]
	}
	if o.Keep != "" {
		if err := writeRequests(o.Keep, lres); err != nil {
			rec.LoadError = err.Error()
		} else {
			rec.RequestsFile = o.Keep
		}
	}
}

// outside summarises the requests due outside [from, to).
func outside(r *loadgen.Result, from, to time.Duration) loadgen.Summary {
	o := &loadgen.Result{Start: r.Start, End: r.End}
	for _, q := range r.Requests {
		if q.Due < from || q.Due >= to {
			o.Requests = append(o.Requests, q)
		}
	}
	s := o.Summary(0, 0)
	// Summary divides the replies by the whole run; outside is shorter.
	if span := r.End - min(to, r.End) + min(from, r.End); span > 0 && r.End > 0 {
		s.ReplyRate *= r.End.Seconds() / span.Seconds()
	}
	return s
}

// failed counts a summary's requests that did not end ok.
func failed(s loadgen.Summary) int { return s.Requests - s.OK }

func secDur(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// writeRequests keeps every request as gzip'd CSV: due, sent and latency
// in milliseconds on the load clock, outcome, HTTP status.
func writeRequests(path string, r *loadgen.Result) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	zw := gzip.NewWriter(f)
	fmt.Fprintln(zw, "due_ms,sent_ms,latency_ms,outcome,status")
	for _, q := range r.Requests {
		fmt.Fprintf(zw, "%.3f,%.3f,%.3f,%s,%d\n", ms(q.Due), ms(q.Sent), ms(q.Latency), q.Outcome, q.Status)
	}
	if err := zw.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
