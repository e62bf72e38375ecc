package scenarios

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/vmigrate/vmigrate/guest"
	"github.com/vmigrate/vmigrate/guest/workload"
	"github.com/vmigrate/vmigrate/wanlink"
)

// UFPE reproduces the study of live migration's impact on a cloud service
// (Torquato de Melo and Maciel, UFPE 2012): a web-serving VM of 512 MB,
// 1 GB or 2 GB migrates while an open-loop client sends it requests at a
// fixed rate (the study: httperf at up to 3000 requests/s against Apache
// 2). Here the web server is the guest agent's (a static page of 4 KB), the client is vmigrate's load
// generator (package loadgen) from the lab's bridge, and the migration
// runs in each configuration of NativeConfigs asked for: by default
// qemu-default (what OpenNebula and KVM did in the study) and
// vmigrate-auto. Besides the web server the guest holds a resident set
// (Memdirty, a quarter of its RAM of real file pages by default, rewritten
// slowly): the page cache and heap a web server's VM carries.
type UFPEOptions struct {
	Image   guest.Image
	Sizes   []int64  // guest RAM; default 512 MiB, 1 GiB, 2 GiB
	Configs []string // default qemu-default, vmigrate-auto
	Load    LoadOptions
	// Memdirty is the guest's resident set as a share of its RAM
	// (WSSBytes is ignored; WSSPercent of each size is used).
	Memdirty   workload.Config
	WSSPercent int            // default 25
	Link       wanlink.Config // default 1 Gbit/s, 0.5 ms: the study's LAN
	Repeat     int            // default 3
	MaxTime    time.Duration  // force stop-and-copy after this long (default 5 min)
	// Libvirt runs the libvirt lab (the study used OpenNebula on KVM)
	// instead of the QMP lab.
	Libvirt        bool
	Keep           string // a directory for each run's requests (none when empty)
	Info           RunInfo
	Accel          string
	QEMU           string
	CacheDir       string
	AllowUnsafeTCG bool
	Log            *zap.Logger
	Each           func(UFPERun)
}

// RunInfo says how and where an experiment ran; every run record carries
// it.
type RunInfo struct {
	Command string `json:"command"`
	Started string `json:"started"`
	Go      string `json:"go"`
	Cores   int    `json:"cores"`
	Kernel  string `json:"kernel"`
	Host    string `json:"host"`
}

// UFPERun is one migration under load.
type UFPERun struct {
	Info     RunInfo `json:"info"`
	MemBytes int64   `json:"mem_bytes"`
	Config   string  `json:"config"`
	Rep      int     `json:"rep"`
	MigrationRecord
	LoadRecord
}

// UFPERow is one size and configuration: medians over verified runs.
type UFPERow struct {
	MemBytes int64  `json:"mem_bytes"`
	Config   string `json:"config"`
	RowStats
	LinkMbps     float64 `json:"link_mean_mbps"`
	SendRate     float64 `json:"send_rate"`  // requests/s sent during the migration
	ReplyRate    float64 `json:"reply_rate"` // answers/s during the migration
	DuringMeanMS float64 `json:"during_mean_ms"`
	DuringP99MS  float64 `json:"during_p99_ms"`
	DuringErrors int     `json:"during_errors"` // summed over the runs: one bad run shows
	OutMeanMS    float64 `json:"outside_mean_ms"`
	OutP99MS     float64 `json:"outside_p99_ms"`
	OutErrors    int     `json:"outside_errors"` // summed over the runs
	OutReplyRate float64 `json:"outside_reply_rate"`
	Rate         float64 `json:"rate"`         // the open-loop rate used (median)
	CapacityRPS  float64 `json:"capacity_rps"` // the guest's closed-loop capacity (median)
}

// UFPEResult is the whole study.
type UFPEResult struct {
	Lab      string          `json:"lab"`
	Server   string          `json:"server"`
	Link     string          `json:"link"`
	Rate     float64         `json:"rate"`
	Share    float64         `json:"share,omitempty"`
	Timeout  string          `json:"timeout"`
	Memdirty workload.Config `json:"memdirty"`
	WSS      int             `json:"wss_percent"`
	Runs     []UFPERun       `json:"runs"`
	Rows     []UFPERow       `json:"rows"`
}

// UFPEServer says what serves the requests.
const UFPEServer = "the guest agent's HTTP server (Go net/http, one vCPU), GET / (a static HTML page of 4 KB); Apache would need a bootable Debian system, and the lab's guest is an initramfs with vmigrate's agent (its Debian OS images are data disks, not booted)"

func (o *UFPEOptions) defaults() {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if len(o.Sizes) == 0 {
		o.Sizes = []int64{512 << 20, 1 << 30, 2 << 30}
	}
	if len(o.Configs) == 0 {
		o.Configs = []string{"qemu-default", "vmigrate-auto"}
	}
	if o.Load.Rate == 0 {
		o.Load.Rate = 3000
	}
	if o.Load.Timeout == 0 {
		o.Load.Timeout = 2 * time.Second
	}
	if o.Load.Before == 0 {
		o.Load.Before = 20 * time.Second
	}
	if o.Load.After == 0 {
		o.Load.After = 20 * time.Second
	}
	if o.WSSPercent == 0 {
		o.WSSPercent = 25
	}
	if o.Memdirty.Name == "" {
		o.Memdirty = workload.Config{Name: workload.MemDirty, PagesPerSec: 1000, BytesPerPage: 64, HotFraction: 1, HotWeight: 1, Body: workload.BodyFiles}
	}
	if o.Link.Bandwidth == 0 && o.Link.RTT == 0 {
		o.Link = wanlink.Config{Bandwidth: 1e9 / 8, RTT: 500 * time.Microsecond}
	}
	if o.Repeat == 0 {
		o.Repeat = 3
	}
	if o.MaxTime == 0 {
		o.MaxTime = 5 * time.Minute
	}
}

func labName(libvirt bool) string {
	if libvirt {
		return "libvirt"
	}
	return "qmp"
}

// UFPE runs the study: for each size, Repeat rounds, each round every
// configuration once (interleaved), each on a fresh lab.
func UFPE(ctx context.Context, o UFPEOptions) (UFPEResult, error) {
	o.defaults()
	for _, c := range o.Configs {
		if err := CheckNativeConfig(c); err != nil {
			return UFPEResult{}, fmt.Errorf("scenario ufpe: %w", err)
		}
	}
	if err := o.Link.Validate(); err != nil {
		return UFPEResult{}, fmt.Errorf("scenario ufpe: %w", err)
	}
	if o.WSSPercent < 0 || o.WSSPercent > 75 {
		return UFPEResult{}, fmt.Errorf("scenario ufpe: resident set %d%% of RAM: want 0 to 75", o.WSSPercent)
	}
	res := UFPEResult{Lab: labName(o.Libvirt), Server: UFPEServer, Link: o.Link.String(), Rate: o.Load.Rate, Share: o.Load.Share,
		Timeout: o.Load.Timeout.String(), Memdirty: o.Memdirty, WSS: o.WSSPercent}
	var err error
	res.Runs, err = rounds(ctx, o.Sizes, o.Repeat, o.Configs, func(size int64, c string, rep int) (UFPERun, error) {
		return ufpeRun(ctx, o, size, c, rep)
	}, o.Each)
	res.Rows = UFPERows(res.Runs)
	return res, err
}

func ufpeRun(ctx context.Context, o UFPEOptions, size int64, config string, rep int) (UFPERun, error) {
	run := UFPERun{Info: o.Info, MemBytes: size, Config: config, Rep: rep}
	w := o.Memdirty
	w.WSSBytes = size * int64(o.WSSPercent) / 100 / workload.PageSize * workload.PageSize
	if w.WSSBytes == 0 {
		w = workload.Config{}
	}
	d := DemoOptions{Image: o.Image, MemBytes: size, Workload: w, Accel: o.Accel, QEMU: o.QEMU, CacheDir: o.CacheDir,
		AllowUnsafeTCG: o.AllowUnsafeTCG, Libvirt: o.Libvirt, Log: o.Log}
	lo := o.Load
	if o.Keep != "" {
		lo.Keep = filepath.Join(o.Keep, fmt.Sprintf("ufpe-%s-%s-%d.csv.gz", SizeName(size), config, rep))
	}
	return run, loadedMigration(ctx, d, config, o.Link, o.MaxTime, lo, &run.MigrationRecord, &run.LoadRecord)
}

// SizeName is a RAM size as the study wrote it: 512M, 1G, 2G.
func SizeName(b int64) string {
	if b%(1<<30) == 0 {
		return fmt.Sprintf("%dG", b>>30)
	}
	return fmt.Sprintf("%dM", b>>20)
}

// UFPERows are the medians per size and configuration, in the order the
// runs first name them.
func UFPERows(runs []UFPERun) []UFPERow {
	type key struct {
		size   int64
		config string
	}
	keys, by := groupBy(runs, func(r UFPERun) key { return key{r.MemBytes, r.Config} })
	var rows []UFPERow
	for _, k := range keys {
		row := UFPERow{MemBytes: k.size, Config: k.config}
		var acc rowAcc
		var dErr, oErr int
		var link, send, reply, dMean, dP99, oMean, oP99, oReply, rate, capa []float64
		for _, r := range by[k] {
			if !acc.addRecord(r.MigrationRecord) {
				continue
			}
			dErr, oErr = dErr+failed(r.During), oErr+failed(r.Outside)
			link, send, reply = append(link, r.LinkMeanMbps), append(send, r.During.SendRate), append(reply, r.During.ReplyRate)
			dMean, dP99 = append(dMean, r.During.MeanMS), append(dP99, r.During.P99MS)
			oMean, oP99, oReply = append(oMean, r.Outside.MeanMS), append(oP99, r.Outside.P99MS), append(oReply, r.Outside.ReplyRate)
			rate, capa = append(rate, r.Rate), append(capa, r.CapacityRPS)
		}
		row.RowStats = acc.stats()
		if row.Runs > 0 {
			row.DuringErrors, row.OutErrors = dErr, oErr
			row.LinkMbps, row.SendRate, row.ReplyRate = median(link), median(send), median(reply)
			row.DuringMeanMS, row.DuringP99MS = median(dMean), median(dP99)
			row.OutMeanMS, row.OutP99MS, row.OutReplyRate = median(oMean), median(oP99), median(oReply)
			row.Rate, row.CapacityRPS = median(rate), median(capa)
		}
		rows = append(rows, row)
	}
	return rows
}

// Trend says, per configuration, whether the median migration time grows
// with the guest's RAM, as the study found.
func (r UFPEResult) Trend() []string {
	var out []string
	for _, c := range uniqueConfigs(r.Rows) {
		var rows []UFPERow
		for _, row := range r.Rows {
			if row.Config == c && row.Runs > 0 {
				rows = append(rows, row)
			}
		}
		slices.SortFunc(rows, func(a, b UFPERow) int { return int(a.MemBytes>>20 - b.MemBytes>>20) })
		if len(rows) < 2 {
			continue
		}
		grows := true
		var parts []string
		for i, row := range rows {
			parts = append(parts, fmt.Sprintf("%s %.1f s", SizeName(row.MemBytes), secs(row.TotalMS)))
			if i > 0 && row.TotalMS <= rows[i-1].TotalMS {
				grows = false
			}
		}
		verdict := "grows with RAM, as in the study"
		if !grows {
			verdict = "does not grow with RAM at every step, unlike the study"
		}
		out = append(out, fmt.Sprintf("%s: migration time %s (%s)", c, verdict, strings.Join(parts, ", ")))
	}
	return out
}

func uniqueConfigs(rows []UFPERow) []string {
	var cs []string
	for _, r := range rows {
		if !slices.Contains(cs, r.Config) {
			cs = append(cs, r.Config)
		}
	}
	return cs
}

// Markdown is the study's table for this machine.
func (r UFPEResult) Markdown() string {
	var b strings.Builder
	rate := fmt.Sprintf("%.0f requests/s", r.Rate)
	if r.Share > 0 {
		rate = fmt.Sprintf("%.0f requests/s, or %.0f%% of what the guest answers in a closed loop (16 kept-alive connections, 3 s, measured before each run) if that is less", r.Rate, r.Share*100)
	}
	fmt.Fprintf(&b, "Lab: %s. Server: %s. Clients: vmigrate's open-loop load generator at %s, timeout %s, kept-alive connections, from the lab's bridge (not through the emulated link). Resident set: memdirty over %d%% of RAM, %s body, %d pages/s. Migration link: %s.\n\n",
		r.Lab, r.Server, rate, r.Timeout, r.WSS, r.Memdirty.Body, r.Memdirty.PagesPerSec, r.Link)
	b.WriteString("| RAM | configuration | runs | capacity / rate (req/s) | migration time (min-max) | downtime QEMU / observed | wire | link mean | replies/s during / outside | mean response during / outside | p99 response during / outside | errors during / outside (all runs) |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, row := range r.Rows {
		runs := fmt.Sprint(row.Runs)
		if row.Failed > 0 || row.Forced > 0 {
			runs += fmt.Sprintf(" (%d failed, %d forced)", row.Failed, row.Forced)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %.0f / %.0f | %.1f s (%.1f-%.1f) | %d / %d ms | %s | %.0f Mbit/s | %.0f / %.0f | %.1f / %.1f ms | %.0f / %.0f ms | %d / %d |\n",
			SizeName(row.MemBytes), row.Config, runs, row.CapacityRPS, row.Rate, secs(row.TotalMS), secs(row.TotalMinMS), secs(row.TotalMaxMS),
			row.DowntimeMS, row.ObservedMS, mibs(row.WireBytes), row.LinkMbps, row.ReplyRate, row.OutReplyRate,
			row.DuringMeanMS, row.OutMeanMS, row.DuringP99MS, row.OutP99MS, row.DuringErrors, row.OutErrors)
	}
	b.WriteString("\nMedians over verified runs, but errors, which are summed over them (a single run whose clients failed shows). \"During\" is the requests due between the migrate command and the destination running; \"outside\" the requests before and after. Errors are time-outs, connection errors, HTTP errors and requests the client could not send (too many in flight).\n\n")
	for _, t := range r.Trend() {
		b.WriteString("- " + t + "\n")
	}
	return b.String()
}
