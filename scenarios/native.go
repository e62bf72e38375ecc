package scenarios

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/vmigrate/vmigrate/guest"
	"github.com/vmigrate/vmigrate/guest/workload"
	"github.com/vmigrate/vmigrate/pagecodec"
	"github.com/vmigrate/vmigrate/qmp"
	"github.com/vmigrate/vmigrate/stopcopy"
	"github.com/vmigrate/vmigrate/tunnel"
	"github.com/vmigrate/vmigrate/wanlink"
	"github.com/vmigrate/vmigrate/wanpath"
)

// Native compares vmigrate's codec with QEMU's own migration settings on
// one guest and workload, through the same emulated link: QEMU's
// connections (one, or several with multifd) cross `wanlink` unchanged,
// vmigrate's cross its tunnel with the page codec. QEMU's configurations
// stop by QEMU's own rule (its downtime limit) under a time budget, after
// which they are forced to stop and copy; vmigrate's by its smart policy
// under the same budget.
//
// The configurations, by name:
//
//	qemu-default     nothing set
//	xbzrle           capability xbzrle, a cache of half the guest's RAM
//	multifd-zstdN    multifd (2 channels), multifd-compression zstd, level N (1..20)
//	auto-converge    capability auto-converge (QEMU throttles the vCPU)
//	vmigrate-EFFORT  the tunnel and page codec at effort fast, lz4, max or auto
var NativeConfigs = []string{"qemu-default", "xbzrle", "multifd-zstd1", "multifd-zstd3", "auto-converge", "vmigrate-lz4", "vmigrate-max", "vmigrate-auto"}

// NativeOptions configure Native.
type NativeOptions struct {
	Image    guest.Image
	MemBytes int64           // default 512 MiB
	Workload workload.Config // default memdirty over half the RAM at 5000 pages/s, 8 bytes a page
	Bodies   []string        // default random, text, files
	Configs  []string        // default NativeConfigs
	Link     wanlink.Config  // default 100 Mbit/s, 50 ms
	Repeat   int             // default 3
	MaxTime  time.Duration   // the budget after which a migration is forced to stop (default 150 s)
	Accel    string
	QEMU     string
	CacheDir string
	Log      *zap.Logger
	// Each, when set, is called after every run.
	Each func(NativeRun)
}

// NativeRun is one migration.
type NativeRun struct {
	Body       string      `json:"body"`
	Config     string      `json:"config"`
	Rep        int         `json:"rep"`
	WireBytes  int64       `json:"wire_bytes"`
	TotalMS    int64       `json:"total_ms"`
	DowntimeMS int64       `json:"downtime_ms"`
	ObservedMS int64       `json:"observed_downtime_ms"`
	Forced     bool        `json:"forced"` // the budget ran out: stopped by force
	Verified   bool        `json:"verified"`
	CPU        *CPUUse     `json:"cpu,omitempty"`
	Error      string      `json:"error,omitempty"`
	Result     *DemoResult `json:"result,omitempty"`
}

// NativeRow is one body and configuration: medians over verified runs.
type NativeRow struct {
	Body   string `json:"body"`
	Config string `json:"config"`
	RowStats
	SrcQEMUMs  int64 `json:"src_qemu_cpu_ms"`
	DstQEMUMs  int64 `json:"dst_qemu_cpu_ms"`
	VmigrateMs int64 `json:"vmigrate_cpu_ms"`
}

// NativeResult is the whole comparison.
type NativeResult struct {
	Link     string          `json:"link"`
	MemBytes int64           `json:"mem_bytes"`
	Workload workload.Config `json:"workload"`
	MaxTime  string          `json:"max_time"`
	Runs     []NativeRun     `json:"runs"`
	Rows     []NativeRow     `json:"rows"`
}

// CheckNativeConfig says whether name is a configuration Native knows.
func CheckNativeConfig(name string) error {
	_, _, err := nativeConfig(name)
	return err
}

// nativeConfig parses a configuration's name: the page codec's effort for
// vmigrate's, or the QEMU settings.
func nativeConfig(name string) (vmigrate bool, eff pagecodec.Effort, err error) {
	if e, ok := strings.CutPrefix(name, "vmigrate-"); ok {
		eff, err := pagecodec.ParseEffort(e)
		return true, eff, err
	}
	switch name {
	case "qemu-default", "xbzrle", "auto-converge":
		return false, 0, nil
	}
	if lv, ok := strings.CutPrefix(name, "multifd-zstd"); ok {
		var n int
		if _, err := fmt.Sscanf(lv, "%d", &n); err == nil && n >= 1 && n <= 20 && fmt.Sprint(n) == lv {
			return false, 0, nil
		}
	}
	return false, 0, fmt.Errorf("configuration %q: want qemu-default, xbzrle, multifd-zstdN (N 1..20), auto-converge or vmigrate-{fast,lz4,max,auto}", name)
}

// Native runs the comparison: for each body, Repeat rounds, each round
// every configuration once (interleaved), each on a fresh lab.
func Native(ctx context.Context, o NativeOptions) (NativeResult, error) {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.MemBytes == 0 {
		o.MemBytes = 512 << 20
	}
	if o.Workload.Name == "" {
		o.Workload = workload.Config{Name: workload.MemDirty, WSSBytes: o.MemBytes / 2, PagesPerSec: 5000, BytesPerPage: 8, HotFraction: 1, HotWeight: 1}
	}
	if len(o.Bodies) == 0 {
		o.Bodies = []string{workload.BodyRandom, workload.BodyText, workload.BodyFiles}
	}
	if len(o.Configs) == 0 {
		o.Configs = NativeConfigs
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
	for _, c := range o.Configs {
		if err := CheckNativeConfig(c); err != nil {
			return NativeResult{}, fmt.Errorf("bench native: %w", err)
		}
	}
	if err := o.Link.Validate(); err != nil {
		return NativeResult{}, fmt.Errorf("bench native: %w", err)
	}
	res := NativeResult{Link: o.Link.String(), MemBytes: o.MemBytes, Workload: o.Workload, MaxTime: o.MaxTime.String()}
	var err error
	res.Runs, err = rounds(ctx, o.Bodies, o.Repeat, o.Configs, func(body, c string, rep int) (NativeRun, error) {
		return nativeRun(ctx, o, body, c, rep)
	}, o.Each)
	if err != nil {
		return res, err
	}
	res.Rows = nativeRows(res.Runs, o.Bodies, o.Configs)
	return res, nil
}

func nativeRun(ctx context.Context, o NativeOptions, body, config string, rep int) (NativeRun, error) {
	run := NativeRun{Body: body, Config: config, Rep: rep}
	dir, err := os.MkdirTemp("", "vmnat")
	if err != nil {
		return run, err
	}
	defer os.RemoveAll(dir)
	w := o.Workload
	w.Body = body
	d := DemoOptions{Image: o.Image, MemBytes: o.MemBytes, Workload: w, Accel: o.Accel, QEMU: o.QEMU, CacheDir: o.CacheDir, Log: o.Log}
	closePath, err := configPath(&d, config, dir, o.Link, o.MaxTime, o.MemBytes, o.Log)
	if err != nil {
		return run, err
	}
	defer closePath()
	dr, err := Demo(ctx, d)
	if err := stopsExperiment(ctx, dr, err); err != nil {
		return run, err
	}
	run.Result = &dr
	run.WireBytes, run.TotalMS, run.DowntimeMS, run.ObservedMS = dr.WireBytes, dr.TotalMS, dr.DowntimeMS, dr.ObservedDowntimeMS
	run.Verified, run.CPU = dr.Verified, dr.CPU
	if dr.Decision != nil && dr.Decision.Rule == stopcopy.RuleBudgetTime {
		run.Forced = true
	}
	if err != nil {
		run.Error = err.Error()
	}
	return run, nil
}

// configPath sets d's path, stop policy and QEMU settings for a
// configuration of NativeConfigs: vmigrate's tunnel and page codec with the
// smart policy, or QEMU's own connections through the link with QEMU's
// rule; either forced to stop and copy after maxTime (none when 0). On
// the libvirt lab (d.Libvirt) QEMU's configuration is plain virsh through
// the link, and only qemu-default and vmigrate's are known. The returned
// function releases the path.
func configPath(d *DemoOptions, config, dir string, link wanlink.Config, maxTime time.Duration, mem int64, log *zap.Logger) (func(), error) {
	isVM, eff, err := nativeConfig(config)
	if err != nil {
		return nil, err
	}
	budget := func(inner stopcopy.Policy) stopcopy.Policy {
		if maxTime <= 0 {
			return inner
		}
		return stopcopy.Budget{Inner: inner, MaxTime: maxTime, OnBreach: stopcopy.StopAndCopy}
	}
	if !isVM && d.Libvirt {
		if config != "qemu-default" {
			return nil, fmt.Errorf("configuration %s: the libvirt lab has QEMU's default (plain virsh) and vmigrate's", config)
		}
		d.Virsh, d.Link, d.VirshTimeout = true, &link, maxTime
		d.Path = "plain virsh migrate --live through the emulated link"
		return func() {}, nil
	}
	if isVM {
		key, err := tunnel.GenerateKey()
		if err != nil {
			return nil, err
		}
		p, err := wanpath.New(wanpath.Config{Dir: dir, Link: &link, Tunnel: tunnel.Config{PSK: key}, DestTunnel: tunnel.Config{PSK: key},
			Codec: pagecodec.New(pagecodec.Config{Effort: eff}), Log: log.Named(config)})
		if err != nil {
			return nil, err
		}
		d.Transport, d.Path = p, "tunnel with the page codec ("+eff.String()+")"
		d.Policy = budget(stopcopy.Smart{})
		return func() { p.Close() }, nil
	}
	lp := &LinkPath{Dir: dir, Link: link, Log: log.Named("wanlink")}
	d.Transport, d.Path = lp, "QEMU's own connections through the emulated link"
	d.Policy = budget(stopcopy.QEMU{})
	d.Prepare = func(ctx context.Context, src, dst *qmp.Client) error {
		return prepareNative(ctx, config, mem, src, dst)
	}
	return func() { lp.Close() }, nil
}

// prepareNative sets a QEMU configuration's capabilities and parameters,
// on both sides where the destination must know them.
func prepareNative(ctx context.Context, config string, mem int64, src, dst *qmp.Client) error {
	both := []*qmp.Client{src, dst}
	var caps []string
	var p qmp.MigrationParameters
	switch {
	case config == "qemu-default":
		return nil
	case config == "xbzrle":
		caps = []string{qmp.CapabilityXBZRLE}
		size := uint64(mem / 2)
		p.XBZRLECacheSize = &size
	case config == "auto-converge":
		caps = []string{qmp.CapabilityAutoConverge}
	case strings.HasPrefix(config, "multifd-zstd"):
		var lv int
		fmt.Sscanf(strings.TrimPrefix(config, "multifd-zstd"), "%d", &lv)
		caps = []string{qmp.CapabilityMultifd}
		ch, comp := 2, "zstd"
		p.MultifdChannels, p.MultifdCompression, p.MultifdZstdLevel = &ch, &comp, &lv
	default:
		return fmt.Errorf("bench native: no QEMU settings for %q", config)
	}
	for i, c := range both {
		side := [2]string{"source", "destination"}[i]
		for _, name := range caps {
			if err := c.MigrateSetCapabilities(ctx, qmp.Capability{Name: name, State: true}); err != nil {
				return fmt.Errorf("bench native: %s: capability %s: %w", side, name, err)
			}
		}
		if err := c.MigrateSetParameters(ctx, p); err != nil {
			return fmt.Errorf("bench native: %s: parameters: %w", side, err)
		}
	}
	return nil
}

func nativeRows(runs []NativeRun, bodies, configs []string) []NativeRow {
	var rows []NativeRow
	for _, b := range bodies {
		for _, c := range configs {
			row := NativeRow{Body: b, Config: c}
			var acc rowAcc
			var src, dst, vm []int64
			for _, r := range runs {
				if r.Body != b || r.Config != c {
					continue
				}
				if acc.add(r.Error == "" && r.Verified, r.Forced, r.WireBytes, r.TotalMS, r.DowntimeMS, r.ObservedMS) && r.CPU != nil {
					src, dst, vm = append(src, r.CPU.SrcQEMUMs), append(dst, r.CPU.DstQEMUMs), append(vm, r.CPU.VmigrateMs)
				}
			}
			row.RowStats = acc.stats()
			row.SrcQEMUMs, row.DstQEMUMs, row.VmigrateMs = median(src), median(dst), median(vm)
			rows = append(rows, row)
		}
	}
	return rows
}

// NativeFromRuns rebuilds a result from runs kept as they ended (bench
// native's native-runs.jsonl, possibly of several interrupted or partial
// benches): bodies and configurations in the order they first appear.
func NativeFromRuns(runs []NativeRun, link string, mem int64, w workload.Config, maxTime string) NativeResult {
	var bodies, configs []string
	for _, r := range runs {
		if !slices.Contains(bodies, r.Body) {
			bodies = append(bodies, r.Body)
		}
		if !slices.Contains(configs, r.Config) {
			configs = append(configs, r.Config)
		}
	}
	rows := nativeRows(runs, bodies, configs)
	// A body may not have run every configuration.
	rows = slices.DeleteFunc(rows, func(r NativeRow) bool { return r.Runs == 0 && r.Failed == 0 })
	return NativeResult{Link: link, MemBytes: mem, Workload: w, MaxTime: maxTime, Runs: runs, Rows: rows}
}

// Best returns, for a body, the best QEMU configuration and the best
// vmigrate one: fewest wire bytes among the rows that completed every run
// without being forced (else the fewest bytes at all).
func (r NativeResult) Best(body string) (qemu, vm *NativeRow) {
	better := func(a, b *NativeRow) bool {
		ca, cb := a.Forced == 0 && a.Failed == 0, b.Forced == 0 && b.Failed == 0
		if ca != cb {
			return ca
		}
		return a.WireBytes < b.WireBytes
	}
	for i := range r.Rows {
		row := &r.Rows[i]
		if row.Body != body || row.Runs == 0 {
			continue
		}
		if strings.HasPrefix(row.Config, "vmigrate-") {
			if vm == nil || better(row, vm) {
				vm = row
			}
		} else if qemu == nil || better(row, qemu) {
			qemu = row
		}
	}
	return qemu, vm
}

// Markdown is the comparison's table, each body's best of both sides
// compared at the end.
func (r NativeResult) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Guest: %d MiB RAM, %s; link %s; forced to stop after %s.\n\n", r.MemBytes>>20, describeWorkload(r.Workload), r.Link, r.MaxTime)
	b.WriteString("| body | configuration | runs | wire bytes (min-max) | total time (min-max) | downtime QEMU / observed | CPU src QEMU / dst QEMU / vmigrate |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, row := range r.Rows {
		runs := fmt.Sprint(row.Runs)
		if row.Failed > 0 {
			runs += fmt.Sprintf(" (%d failed)", row.Failed)
		}
		if row.Forced > 0 {
			runs += fmt.Sprintf(" (%d forced)", row.Forced)
		}
		if row.Runs == 0 {
			fmt.Fprintf(&b, "| %s | %s | %s | | | | |\n", row.Body, row.Config, runs)
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s (%s-%s) | %.1f s (%.1f-%.1f) | %d / %d ms | %.1f / %.1f / %.1f s |\n",
			row.Body, row.Config, runs, mibs(row.WireBytes), mibs(row.WireMin), mibs(row.WireMax),
			secs(row.TotalMS), secs(row.TotalMinMS), secs(row.TotalMaxMS), row.DowntimeMS, row.ObservedMS,
			secs(row.SrcQEMUMs), secs(row.DstQEMUMs), secs(row.VmigrateMs))
	}
	b.WriteString("\n| body | best QEMU | best vmigrate | bytes | time | observed downtime |\n|---|---|---|---|---|---|\n")
	seen := map[string]bool{}
	for _, row := range r.Rows {
		if seen[row.Body] {
			continue
		}
		seen[row.Body] = true
		q, v := r.Best(row.Body)
		if q == nil || v == nil {
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %.2fx | %.2fx | %d vs %d ms |\n", row.Body, q.Config, v.Config,
			float64(v.WireBytes)/float64(q.WireBytes), float64(v.TotalMS)/float64(q.TotalMS), v.ObservedMS, q.ObservedMS)
	}
	return b.String()
}

func mibs(n int64) string   { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }
func secs(ms int64) float64 { return float64(ms) / 1000 }

// WriteNativeReport writes native.json and native.md into dir.
func WriteNativeReport(dir string, r NativeResult, header string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := writeJSONFile(filepath.Join(dir, "native.json"), r); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "native.md"), []byte(header+r.Markdown()), 0o644)
}

// LinkPath is a migrate.Transport that carries QEMU's own connections
// (several with multifd) unchanged through an emulated link: the source
// migrates to a unix socket in Dir, each connection is relayed to a new
// connection to the destination's incoming address. It is the native
// baseline: all migration bytes cross the link, as they do vmigrate's
// tunnel (QEMU's max-bandwidth is no WAN model).
type LinkPath struct {
	Dir  string
	Link wanlink.Config
	Log  *zap.Logger

	mu     sync.Mutex // guards link and done: Counts and Err run beside Open
	link   *wanlink.Link
	ln     net.Listener
	cancel context.CancelFunc
	done   chan struct{} // closed when the relay has stopped, err set
	once   sync.Once
	err    error
}

// Name implements migrate.Transport.
func (p *LinkPath) Name() string { return "link" }

// Open implements migrate.Transport.
func (p *LinkPath) Open(ctx context.Context, incomingURI string) (string, error) {
	network, addr, ok := strings.Cut(incomingURI, ":")
	if !ok || (network != "unix" && network != "tcp") {
		return "", fmt.Errorf("link path: incoming %q: want unix:PATH or tcp:HOST:PORT", incomingURI)
	}
	if p.Log == nil {
		p.Log = zap.NewNop()
	}
	link, err := wanlink.New(p.Link, p.Log)
	if err != nil {
		return "", err
	}
	sock := filepath.Join(p.Dir, "link.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		link.Close()
		return "", fmt.Errorf("link path: %w", err)
	}
	life, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	p.mu.Lock()
	p.link, p.ln, p.cancel, p.done = link, ln, cancel, done
	p.mu.Unlock()
	var d net.Dialer
	go func() {
		err := wanlink.Serve(life, ln, func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, network, addr) }, link)
		if errors.Is(err, context.Canceled) || errors.Is(err, net.ErrClosed) {
			err = nil
		}
		p.err = err
		close(done)
	}()
	return "unix:" + sock, nil
}

// Counts implements migrate.Transport: what the source sent into the
// link, and what crossed it both ways.
func (p *LinkPath) Counts() (stream, wire int64) {
	p.mu.Lock()
	link := p.link
	p.mu.Unlock()
	if link == nil {
		return 0, 0
	}
	st := link.Stats()
	return st.Forward.Bytes, st.Forward.Bytes + st.Reverse.Bytes
}

// Err implements migrate.Transport.
func (p *LinkPath) Err() error {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return p.err // written before done was closed
	default:
		return nil
	}
}

// Close implements migrate.Transport.
func (p *LinkPath) Close() error {
	p.once.Do(func() {
		p.mu.Lock()
		cancel, ln, done, link := p.cancel, p.ln, p.done, p.link
		p.mu.Unlock()
		if cancel != nil {
			cancel()
			ln.Close()
			<-done
			link.Close()
		}
	})
	return nil
}
