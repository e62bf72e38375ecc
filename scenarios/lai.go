package scenarios

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/vmigrate/vmigrate/blockcodec"
	"github.com/vmigrate/vmigrate/blockindex"
	"github.com/vmigrate/vmigrate/guest"
	"github.com/vmigrate/vmigrate/guest/workload"
	"github.com/vmigrate/vmigrate/lab"
	"github.com/vmigrate/vmigrate/pagecodec"
	"github.com/vmigrate/vmigrate/stopcopy"
	"github.com/vmigrate/vmigrate/tunnel"
	"github.com/vmigrate/vmigrate/wanlink"
	"github.com/vmigrate/vmigrate/wanpath"
)

// Lai reproduces Lai, Wu and Cheng (SERE 2013): a VM whose disk holds a
// fresh OS install moves to a host where a sibling VM of the same OS
// already sits, over a 100 Mbit/s WAN; with an index of the sibling's
// blocks the disk migration sent 66 % fewer bytes and took 59 % less time.
// Here the guest's disk is variant 0 of lab.BuildOSImages, the sibling
// variant 1, and each migration runs in one of three modes through the
// same emulated link:
//
//   - plain: the tunnel with no codec, the disk mirrored as QEMU's NBD
//     client sends it (what QEMU, libvirt, Proxmox and KubeVirt send);
//   - codec: vmigrate's page codec and block codec, no index;
//   - index: both codecs, and the destination's index of variant 1.
//
// The modes run interleaved (plain, codec, index, plain, ...), each on a
// fresh lab, with the same stop policy; the guest does not write its disk,
// so after each move the destination's image is compared byte for byte
// with the source's.
const (
	LaiPlain = "plain"
	LaiCodec = "codec"
	LaiIndex = "index"
)

// LaiPaper is what Lai et al. report for their scheme against plain
// migration: the reduction of data sent and of migration time.
var LaiPaper = struct{ BytesCut, TimeCut float64 }{0.66, 0.59}

// LaiOptions configure Lai.
type LaiOptions struct {
	Image    guest.Image
	OS       lab.OSImages
	MemBytes int64           // default 512 MiB
	Workload workload.Config // default memdirty over 32 MiB at 500 pages/s
	Link     wanlink.Config  // default 100 Mbit/s, 50 ms RTT
	Repeat   int             // default 3
	Modes    []string        // default plain, codec, index
	// IndexPath is where the destination's index of variant 1 is built
	// (required).
	IndexPath      string
	Accel, QEMU    string
	CacheDir       string
	AllowUnsafeTCG bool
	Log            *zap.Logger
	// Each, when set, is called after every run.
	Each func(LaiRun)
}

// LaiRun is one migration.
type LaiRun struct {
	Mode string `json:"mode"`
	Rep  int    `json:"rep"`
	// WireBytes crossed the link (both directions, RAM and disk);
	// DiskWireBytes is the disk channel's share (source to destination),
	// DiskPayloadBytes what the mirror wrote.
	WireBytes        int64 `json:"wire_bytes"`
	DiskWireBytes    int64 `json:"disk_wire_bytes"`
	DiskPayloadBytes int64 `json:"disk_payload_bytes"`
	ReadyMS          int64 `json:"disk_ready_ms"`
	TotalMS          int64 `json:"total_ms"`
	DowntimeMS       int64 `json:"downtime_ms"`
	ObservedMS       int64 `json:"observed_downtime_ms"`
	Verified         bool  `json:"verified"`
	DisksIdentical   bool  `json:"disks_identical"`
	// RefBytes are disk bytes sent as references to the index.
	RefBytes int64       `json:"ref_bytes"`
	Error    string      `json:"error,omitempty"`
	Result   *DemoResult `json:"result,omitempty"`
}

// LaiRow is a mode's medians over its runs that completed verified.
type LaiRow struct {
	Mode          string  `json:"mode"`
	Runs          int     `json:"runs"`
	Failed        int     `json:"failed"`
	WireBytes     int64   `json:"wire_bytes"`
	WireMin       int64   `json:"wire_bytes_min"`
	WireMax       int64   `json:"wire_bytes_max"`
	DiskWireBytes int64   `json:"disk_wire_bytes"`
	ReadyMS       int64   `json:"disk_ready_ms"`
	TotalMS       int64   `json:"total_ms"`
	TotalMinMS    int64   `json:"total_min_ms"`
	TotalMaxMS    int64   `json:"total_max_ms"`
	DowntimeMS    int64   `json:"downtime_ms"`
	ObservedMS    int64   `json:"observed_downtime_ms"`
	BytesCut      float64 `json:"bytes_cut_vs_plain"` // 1 - wire / plain's wire
	TimeCut       float64 `json:"time_cut_vs_plain"`  // 1 - total / plain's total
}

// LaiResult is the whole experiment.
type LaiResult struct {
	Link     string `json:"link"`
	MemBytes int64  `json:"mem_bytes"`
	// DiskBytes is the guest disk's size, DiskNonZeroBytes its data.
	DiskBytes        int64           `json:"disk_bytes"`
	DiskNonZeroBytes int64           `json:"disk_nonzero_bytes"`
	Workload         workload.Config `json:"workload"`
	OS               lab.OSImages    `json:"os_images"`
	// Coverage is how much of variant 0 the index of variant 1 holds.
	Coverage   blockindex.Coverage `json:"coverage"`
	Index      blockindex.Stats    `json:"index"`
	IndexBuild time.Duration       `json:"-"`
	IndexMS    int64               `json:"index_build_ms"`
	Runs       []LaiRun            `json:"runs"`
	Rows       []LaiRow            `json:"rows"`
}

// Lai runs the experiment. A run that fails is recorded and the
// experiment goes on; the error is for what stops it (the lab cannot
// start, the index cannot be built, ctx ended).
func Lai(ctx context.Context, o LaiOptions) (LaiResult, error) {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.MemBytes == 0 {
		o.MemBytes = 512 << 20
	}
	if o.Workload.Name == "" {
		o.Workload = workload.Config{Name: workload.MemDirty, WSSBytes: 32 << 20, PagesPerSec: 500, BytesPerPage: 8, HotFraction: 1, HotWeight: 1}
	}
	if o.Link.Bandwidth == 0 && o.Link.RTT == 0 {
		o.Link = wanlink.Config{Bandwidth: 100e6 / 8, RTT: 50 * time.Millisecond}
	}
	if o.Repeat == 0 {
		o.Repeat = 3
	}
	if len(o.Modes) == 0 {
		o.Modes = []string{LaiPlain, LaiCodec, LaiIndex}
	}
	for _, m := range o.Modes {
		if m != LaiPlain && m != LaiCodec && m != LaiIndex {
			return LaiResult{}, fmt.Errorf("lai: mode %q: want plain, codec or index", m)
		}
	}
	if o.IndexPath == "" {
		return LaiResult{}, fmt.Errorf("lai: no path for the index")
	}
	if err := o.Link.Validate(); err != nil {
		return LaiResult{}, fmt.Errorf("lai: %w", err)
	}
	res := LaiResult{Link: o.Link.String(), MemBytes: o.MemBytes, Workload: o.Workload, OS: o.OS, DiskBytes: o.OS.Sizes[0]}

	start := time.Now()
	idx, _, err := blockindex.Build(ctx, o.IndexPath, blockindex.DefaultBlockSize, []string{o.OS.Images[1]}, blockindex.Options{})
	if err != nil {
		return res, fmt.Errorf("lai: index of the neighbour: %w", err)
	}
	if err := idx.Save(); err != nil {
		return res, fmt.Errorf("lai: %w", err)
	}
	res.IndexBuild = time.Since(start)
	res.IndexMS = res.IndexBuild.Milliseconds()
	res.Index = idx.Stats()
	if res.Coverage, err = idx.Coverage(ctx, o.OS.Images[0]); err != nil {
		return res, fmt.Errorf("lai: %w", err)
	}
	idx.Close()
	res.DiskNonZeroBytes = res.Coverage.NonZeroBytes

	for rep := 1; rep <= o.Repeat; rep++ {
		for _, mode := range o.Modes {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			run, err := laiRun(ctx, o, mode, rep)
			if err != nil {
				return res, err
			}
			res.Runs = append(res.Runs, run)
			if o.Each != nil {
				o.Each(run)
			}
		}
	}
	res.Rows = laiRows(res.Runs, o.Modes)
	return res, nil
}

// laiRun migrates the guest once in mode. Its error is one that stops
// the experiment; a failed migration is in LaiRun.Error.
func laiRun(ctx context.Context, o LaiOptions, mode string, rep int) (LaiRun, error) {
	run := LaiRun{Mode: mode, Rep: rep}
	dir, err := os.MkdirTemp("", "vmlai")
	if err != nil {
		return run, err
	}
	defer os.RemoveAll(dir)
	key, err := tunnel.GenerateKey()
	if err != nil {
		return run, err
	}
	link := o.Link
	cfg := wanpath.Config{Dir: dir, Link: &link, Tunnel: tunnel.Config{PSK: key}, DestTunnel: tunnel.Config{PSK: key}, Log: o.Log.Named(mode)}
	desc := "tunnel, no codec"
	if mode != LaiPlain {
		cfg.Codec = pagecodec.New(pagecodec.Config{})
		cfg.DiskCodec = &blockcodec.Config{}
		desc = "tunnel with the page and block codecs"
	}
	if mode == LaiIndex {
		idx, err := blockindex.Open(o.IndexPath)
		if err != nil {
			return run, fmt.Errorf("lai: %w", err)
		}
		defer idx.Close()
		cfg.DiskIndex = idx
		desc += " and the neighbour index"
	}
	p, err := wanpath.New(cfg)
	if err != nil {
		return run, fmt.Errorf("lai: %w", err)
	}
	defer p.Close()
	d, err := Demo(ctx, DemoOptions{
		Image: o.Image, MemBytes: o.MemBytes, Workload: o.Workload, DiskImage: o.OS.Images[0], CompareDisks: true,
		Accel: o.Accel, QEMU: o.QEMU, CacheDir: o.CacheDir, AllowUnsafeTCG: o.AllowUnsafeTCG,
		Transport: p, Path: desc + " over an emulated " + link.String() + " link", Policy: stopcopy.Smart{}, Log: o.Log,
	})
	if err := stopsExperiment(ctx, d, err); err != nil {
		return run, err
	}
	run.Result = &d
	run.WireBytes, run.TotalMS, run.DowntimeMS = d.WireBytes, d.TotalMS, d.DowntimeMS
	run.ObservedMS = d.ObservedDowntimeMS
	run.Verified, run.DisksIdentical = d.Verified, d.DisksIdentical
	if err != nil {
		run.Error = err.Error()
	}
	for _, ds := range d.Disks {
		run.DiskWireBytes += ds.SentBytes
		run.ReadyMS = max(run.ReadyMS, ds.ReadyMS)
		if ds.Codec != nil {
			run.DiskPayloadBytes += ds.Codec.PayloadBytes
			run.RefBytes += ds.Codec.Ref.Bytes
		}
	}
	return run, nil
}

func laiRows(runs []LaiRun, modes []string) []LaiRow {
	var rows []LaiRow
	for _, m := range modes {
		row := LaiRow{Mode: m}
		var wire, disk, ready, total, down, obs []int64
		for _, r := range runs {
			if r.Mode != m {
				continue
			}
			if r.Error != "" || !r.Verified || !r.DisksIdentical {
				row.Failed++
				continue
			}
			row.Runs++
			wire, disk, ready = append(wire, r.WireBytes), append(disk, r.DiskWireBytes), append(ready, r.ReadyMS)
			total, down, obs = append(total, r.TotalMS), append(down, r.DowntimeMS), append(obs, r.ObservedMS)
		}
		if row.Runs > 0 {
			row.WireBytes, row.WireMin, row.WireMax = median(wire), slices.Min(wire), slices.Max(wire)
			row.DiskWireBytes, row.ReadyMS = median(disk), median(ready)
			row.TotalMS, row.TotalMinMS, row.TotalMaxMS = median(total), slices.Min(total), slices.Max(total)
			row.DowntimeMS, row.ObservedMS = median(down), median(obs)
		}
		rows = append(rows, row)
	}
	var plain *LaiRow
	for i := range rows {
		if rows[i].Mode == LaiPlain && rows[i].Runs > 0 {
			plain = &rows[i]
		}
	}
	if plain != nil {
		for i := range rows {
			if rows[i].Runs > 0 {
				rows[i].BytesCut = 1 - float64(rows[i].WireBytes)/float64(plain.WireBytes)
				rows[i].TimeCut = 1 - float64(rows[i].TotalMS)/float64(plain.TotalMS)
			}
		}
	}
	return rows
}

// stopsExperiment is the error of one of an experiment's demos that
// ends the whole experiment: ctx ended, or the lab did not come up (every
// other run would fail the same way). A failed migration is not one: it
// is a run's result.
func stopsExperiment(ctx context.Context, d DemoResult, err error) error {
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case d.BootMS == 0 && d.Accel == "":
		return err
	}
	return nil
}

// median of xs (the lower middle for an even count); xs is sorted.
func median[T cmp.Ordered](xs []T) T {
	if len(xs) == 0 {
		var zero T
		return zero
	}
	slices.Sort(xs)
	return xs[(len(xs)-1)/2]
}

// Markdown is the experiment's table, with Lai et al.'s figures beside
// ours.
func (r LaiResult) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Guest: %d MiB RAM (%s), disk %s of which %s data (OS image variant 0); neighbour on the destination: variant 1, %.1f%% of variant 0's data found at %d-byte blocks; index %s in memory (%s per TiB), built in %.1f s. Link: %s.\n\n",
		r.MemBytes>>20, describeWorkload(r.Workload), blockindex.FormatBytes(r.DiskBytes), blockindex.FormatBytes(r.DiskNonZeroBytes),
		100*r.Coverage.Fraction, r.Coverage.BlockSize, blockindex.FormatBytes(r.Index.MemoryBytes), blockindex.FormatBytes(r.Index.MemoryPerTiB),
		float64(r.IndexMS)/1000, r.Link)
	b.WriteString("| mode | runs | wire bytes (min-max) | disk channel | disk ready | total time (min-max) | downtime (QEMU / observed) | bytes vs plain | time vs plain |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, row := range r.Rows {
		if row.Runs == 0 {
			fmt.Fprintf(&b, "| %s | 0 (%d failed) | | | | | | | |\n", row.Mode, row.Failed)
			continue
		}
		runs := fmt.Sprint(row.Runs)
		if row.Failed > 0 {
			runs += fmt.Sprintf(" (%d failed)", row.Failed)
		}
		fmt.Fprintf(&b, "| %s | %s | %s (%s-%s) | %s | %.1f s | %.1f s (%.1f-%.1f) | %d / %d ms | %s | %s |\n",
			row.Mode, runs, blockindex.FormatBytes(row.WireBytes), blockindex.FormatBytes(row.WireMin), blockindex.FormatBytes(row.WireMax),
			blockindex.FormatBytes(row.DiskWireBytes), float64(row.ReadyMS)/1000,
			float64(row.TotalMS)/1000, float64(row.TotalMinMS)/1000, float64(row.TotalMaxMS)/1000,
			row.DowntimeMS, row.ObservedMS, cut(row.Mode, row.BytesCut), cut(row.Mode, row.TimeCut))
	}
	fmt.Fprintf(&b, "| Lai et al. (2013), their index vs plain | | | | | | | -%.0f%% | -%.0f%% |\n", 100*LaiPaper.BytesCut, 100*LaiPaper.TimeCut)
	return b.String()
}

func cut(mode string, c float64) string {
	if mode == LaiPlain {
		return "="
	}
	return fmt.Sprintf("%+.0f%%", -100*c)
}

// WriteLaiReport writes lai.json and lai.md into dir.
func WriteLaiReport(dir string, r LaiResult, header string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := writeJSONFile(filepath.Join(dir, "lai.json"), r); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "lai.md"), []byte(header+r.Markdown()), 0o644)
}

func describeWorkload(w workload.Config) string {
	if w.Name != workload.MemDirty {
		return w.Name
	}
	return fmt.Sprintf("memdirty over %s at %d pages/s", workload.FormatSize(w.WSSBytes), w.PagesPerSec)
}

func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
