package scenarios

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/vmigrate/vmigrate/guest"
	"github.com/vmigrate/vmigrate/guest/workload"
	"github.com/vmigrate/vmigrate/wanlink"
)

// CloudNet reproduces CloudNet's table (Wood et al., VEE 2011): one VM
// moved over a WAN link under three workloads, the hypervisor's default
// migration against CloudNet's (smart stop and copy, content-based
// redundancy elimination, page deltas). Here "default" is QEMU's own
// migration with its own stop rule and no codec (QEMU's connection
// crossing the same emulated link), "optimised" is vmigrate's tunnel and
// page codec with the smart stop rule.
//
// The workloads stand for CloudNet's; none is the real application:
//
//	tpcw    web requests at a fixed rate (the guest agent's server) over a
//	        database-like memory: a working set of text pages (rows) with a
//	        hot fifth taking most writes
//	kernel  a kernel compile's dirtying shape: a large set of real file
//	        pages (sources and objects in the page cache) rewritten at a
//	        moderate rate, half of them hot
//	specjbb a heap-heavy server: most of RAM in a working set of
//	        incompressible pages with a large hot set written fast
type CloudNetOptions struct {
	Image     guest.Image
	MemBytes  int64          // default 1 GiB (CloudNet's VMs moved about 1 GB)
	Workloads []string       // default tpcw, kernel, specjbb
	Modes     []string       // default default, optimised
	Link      wanlink.Config // default 100 Mbit/s, 50 ms RTT
	Repeat    int            // default 3
	MaxTime   time.Duration  // force stop-and-copy after this long (default 150 s)
	// Optimised is the configuration of the optimised mode (default
	// vmigrate-auto); Default the default mode's (qemu-default).
	Optimised, Default string
	// RequestRate is tpcw's web requests per second (default 200), or
	// half of what the guest answers in a closed loop if that is less.
	RequestRate    float64
	Libvirt        bool
	Info           RunInfo
	Accel          string
	QEMU           string
	CacheDir       string
	AllowUnsafeTCG bool
	Log            *zap.Logger
	Each           func(CloudNetRun)
}

// The CloudNet workloads and modes.
const (
	CloudNetTPCW    = "tpcw"
	CloudNetKernel  = "kernel"
	CloudNetSPECjbb = "specjbb"
	ModeDefault     = "default"
	ModeOptimised   = "optimised"
)

// CloudNetWorkloads are the workloads, in the paper's order.
var CloudNetWorkloads = []string{CloudNetTPCW, CloudNetKernel, CloudNetSPECjbb}

// CloudNetPaper is CloudNet's table: Xen's default, then CloudNet.
type CloudNetPaper struct {
	DataGB  [2]float64
	TotalS  [2]float64
	PauseS  [2]float64
	Meaning string
}

// CloudNetPapers are the paper's figures by workload.
var CloudNetPapers = map[string]CloudNetPaper{
	CloudNetTPCW:    {DataGB: [2]float64{1.5, 0.9}, TotalS: [2]float64{135, 78}, PauseS: [2]float64{3.7, 2.3}, Meaning: "TPC-W (e-commerce)"},
	CloudNetKernel:  {DataGB: [2]float64{1.5, 1.1}, TotalS: [2]float64{133, 101}, PauseS: [2]float64{5.9, 3.5}, Meaning: "kernel compile"},
	CloudNetSPECjbb: {DataGB: [2]float64{1.2, 0.4}, TotalS: [2]float64{112, 35}, PauseS: [2]float64{7.8, 6.5}, Meaning: "SPECjbb (Java server)"},
}

// cloudNetWorkload is the guest's memory workload and the web request
// rate standing for a CloudNet workload.
func cloudNetWorkload(name string, mem int64, rate float64) (workload.Config, float64, error) {
	pages := func(pct int64) int64 { return mem * pct / 100 / workload.PageSize * workload.PageSize }
	switch name {
	case CloudNetTPCW:
		return workload.Config{Name: workload.MemDirty, WSSBytes: pages(50), PagesPerSec: 1500, BytesPerPage: 64,
			HotFraction: 0.2, HotWeight: 0.8, Body: workload.BodyText}, rate, nil
	case CloudNetKernel:
		return workload.Config{Name: workload.MemDirty, WSSBytes: pages(60), PagesPerSec: 2000, BytesPerPage: 256,
			HotFraction: 0.5, HotWeight: 0.5, Body: workload.BodyFiles}, 0, nil
	case CloudNetSPECjbb:
		return workload.Config{Name: workload.MemDirty, WSSBytes: pages(70), PagesPerSec: 2500, BytesPerPage: 64,
			HotFraction: 0.3, HotWeight: 0.9, Body: workload.BodyRandom}, 0, nil
	}
	return workload.Config{}, 0, fmt.Errorf("workload %q: want tpcw, kernel or specjbb", name)
}

// CloudNetRun is one migration.
type CloudNetRun struct {
	Info     RunInfo         `json:"info"`
	Workload string          `json:"workload"`
	Mode     string          `json:"mode"`
	Config   string          `json:"config"`
	Rep      int             `json:"rep"`
	Memdirty workload.Config `json:"memdirty"`
	MigrationRecord
	LoadRecord
}

// CloudNetRow is one workload and mode: medians over verified runs.
type CloudNetRow struct {
	Workload string `json:"workload"`
	Mode     string `json:"mode"`
	RowStats
}

// CloudNetResult is the whole table.
type CloudNetResult struct {
	Lab       string        `json:"lab"`
	Link      string        `json:"link"`
	MemBytes  int64         `json:"mem_bytes"`
	MaxTime   string        `json:"max_time"`
	Default   string        `json:"default"`
	Optimised string        `json:"optimised"`
	Runs      []CloudNetRun `json:"runs"`
	Rows      []CloudNetRow `json:"rows"`
}

func (o *CloudNetOptions) defaults() {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.MemBytes == 0 {
		o.MemBytes = 1 << 30
	}
	if len(o.Workloads) == 0 {
		o.Workloads = CloudNetWorkloads
	}
	if len(o.Modes) == 0 {
		o.Modes = []string{ModeDefault, ModeOptimised}
	}
	if o.Link.Bandwidth == 0 && o.Link.RTT == 0 {
		o.Link = wanlink.Config{Bandwidth: 100e6 / 8, RTT: 50 * time.Millisecond}
	}
	if o.Repeat == 0 {
		o.Repeat = 3
	}
	if o.MaxTime == 0 {
		o.MaxTime = 150 * time.Second
	}
	if o.Default == "" {
		o.Default = "qemu-default"
	}
	if o.Optimised == "" {
		o.Optimised = "vmigrate-auto"
	}
	if o.RequestRate == 0 {
		o.RequestRate = 200
	}
}

// CloudNet runs the table: for each workload, Repeat rounds, each round
// every mode once (interleaved), each on a fresh lab.
func CloudNet(ctx context.Context, o CloudNetOptions) (CloudNetResult, error) {
	o.defaults()
	for _, w := range o.Workloads {
		if _, _, err := cloudNetWorkload(w, o.MemBytes, 0); err != nil {
			return CloudNetResult{}, fmt.Errorf("scenario cloudnet: %w", err)
		}
	}
	for _, m := range o.Modes {
		if m != ModeDefault && m != ModeOptimised {
			return CloudNetResult{}, fmt.Errorf("scenario cloudnet: mode %q: want default or optimised", m)
		}
	}
	for _, c := range []string{o.Default, o.Optimised} {
		if err := CheckNativeConfig(c); err != nil {
			return CloudNetResult{}, fmt.Errorf("scenario cloudnet: %w", err)
		}
	}
	if err := o.Link.Validate(); err != nil {
		return CloudNetResult{}, fmt.Errorf("scenario cloudnet: %w", err)
	}
	res := CloudNetResult{Lab: labName(o.Libvirt), Link: o.Link.String(), MemBytes: o.MemBytes, MaxTime: o.MaxTime.String(),
		Default: o.Default, Optimised: o.Optimised}
	var err error
	res.Runs, err = rounds(ctx, o.Workloads, o.Repeat, o.Modes, func(w, m string, rep int) (CloudNetRun, error) {
		return cloudNetRun(ctx, o, w, m, rep)
	}, o.Each)
	res.Rows = CloudNetRows(res.Runs)
	return res, err
}

func cloudNetRun(ctx context.Context, o CloudNetOptions, name, mode string, rep int) (CloudNetRun, error) {
	config := o.Default
	if mode == ModeOptimised {
		config = o.Optimised
	}
	run := CloudNetRun{Info: o.Info, Workload: name, Mode: mode, Config: config, Rep: rep}
	w, rate, err := cloudNetWorkload(name, o.MemBytes, o.RequestRate)
	if err != nil {
		return run, err
	}
	run.Memdirty = w
	d := DemoOptions{Image: o.Image, MemBytes: o.MemBytes, Workload: w, Accel: o.Accel, QEMU: o.QEMU, CacheDir: o.CacheDir,
		AllowUnsafeTCG: o.AllowUnsafeTCG, Libvirt: o.Libvirt, Log: o.Log}
	lo := LoadOptions{Rate: rate, Share: 0.5, Timeout: 2 * time.Second, Before: 5 * time.Second, After: 5 * time.Second}
	return run, loadedMigration(ctx, d, config, o.Link, o.MaxTime, lo, &run.MigrationRecord, &run.LoadRecord)
}

// CloudNetRows are the medians per workload and mode, in the order the
// runs first name them.
func CloudNetRows(runs []CloudNetRun) []CloudNetRow {
	type key struct{ w, m string }
	keys, by := groupBy(runs, func(r CloudNetRun) key { return key{r.Workload, r.Mode} })
	var rows []CloudNetRow
	for _, k := range keys {
		var acc rowAcc
		for _, r := range by[k] {
			acc.addRecord(r.MigrationRecord)
		}
		row := CloudNetRow{Workload: k.w, Mode: k.m, RowStats: acc.stats()}
		rows = append(rows, row)
	}
	return rows
}

// row finds a workload's row in a mode.
func (r CloudNetResult) row(w, mode string) *CloudNetRow {
	for i := range r.Rows {
		if r.Rows[i].Workload == w && r.Rows[i].Mode == mode && r.Rows[i].Runs > 0 {
			return &r.Rows[i]
		}
	}
	return nil
}

// CloudNetRatios are optimised over default for one workload: ours and
// the paper's. Pause is the paper's pause time against our observed
// downtime (what a client sees) and QEMU's.
type CloudNetRatios struct {
	Workload                       string
	Data, Total, Pause, QEMUPause  float64
	PaperData, PaperTotal, PaperPs float64
}

// Ratios compares each workload's modes; a workload without both modes
// is left out.
func (r CloudNetResult) Ratios() []CloudNetRatios {
	var out []CloudNetRatios
	for _, w := range CloudNetWorkloads {
		d, o := r.row(w, ModeDefault), r.row(w, ModeOptimised)
		if d == nil || o == nil {
			continue
		}
		p := CloudNetPapers[w]
		out = append(out, CloudNetRatios{
			Workload: w,
			Data:     ratio(o.WireBytes, d.WireBytes), Total: ratio(o.TotalMS, d.TotalMS),
			Pause: ratio(o.ObservedMS, d.ObservedMS), QEMUPause: ratio(o.DowntimeMS, d.DowntimeMS),
			PaperData: p.DataGB[1] / p.DataGB[0], PaperTotal: p.TotalS[1] / p.TotalS[0], PaperPs: p.PauseS[1] / p.PauseS[0],
		})
	}
	return out
}

func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// Markdown is the table with the paper's figures beside ours.
func (r CloudNetResult) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Lab: %s. Guest: %d MiB RAM, one vCPU. Link: %s (CloudNet's runs moved 1.2-1.5 GB in 112-135 s, about 90 Mbit/s). Default: %s (QEMU's stop rule, no codec); optimised: %s (smart stop and copy, page codec). A run not done after %s is forced to stop and copy.\n\n",
		r.Lab, r.MemBytes>>20, r.Link, r.Default, r.Optimised, r.MaxTime)
	b.WriteString("| workload | mode | runs | data sent (min-max) | total time (min-max) | pause: QEMU / observed | CloudNet paper: data, time, pause |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, row := range r.Rows {
		p := CloudNetPapers[row.Workload]
		i := 0
		if row.Mode == ModeOptimised {
			i = 1
		}
		runs := fmt.Sprint(row.Runs)
		if row.Failed > 0 || row.Forced > 0 {
			runs += fmt.Sprintf(" (%d failed, %d forced)", row.Failed, row.Forced)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s (%s-%s) | %.1f s (%.1f-%.1f) | %.2f / %.2f s | %.1f GB, %.0f s, %.1f s |\n",
			row.Workload, row.Mode, runs, mibs(row.WireBytes), mibs(row.WireMin), mibs(row.WireMax),
			secs(row.TotalMS), secs(row.TotalMinMS), secs(row.TotalMaxMS), secs(row.DowntimeMS), secs(row.ObservedMS),
			p.DataGB[i], p.TotalS[i], p.PauseS[i])
	}
	if rs := r.Ratios(); len(rs) > 0 {
		b.WriteString("\nOptimised over default (lower is better), ours against CloudNet's over Xen's default:\n\n")
		b.WriteString("| workload | data sent | total time | pause (observed; QEMU's) |\n|---|---|---|---|\n")
		for _, x := range rs {
			fmt.Fprintf(&b, "| %s | %.2f (paper %.2f) | %.2f (paper %.2f) | %.2f; %.2f (paper %.2f) |\n",
				x.Workload, x.Data, x.PaperData, x.Total, x.PaperTotal, x.Pause, x.QEMUPause, x.PaperPs)
		}
	}
	return b.String()
}
