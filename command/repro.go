package command

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/vmigrate/vmigrate/guest/workload"
	"github.com/vmigrate/vmigrate/lab"
	"github.com/vmigrate/vmigrate/scenarios"
	"github.com/vmigrate/vmigrate/wanlink"
)

// reproFlags are the flags the UFPE and CloudNet reproductions share.
func reproFlags(out, bw, rtt, maxTime string) []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "repeat", Value: 3, Usage: "runs per row"},
		&cli.StringFlag{Name: "wan-bandwidth", Value: bw, Usage: "the migration link's bandwidth"},
		&cli.StringFlag{Name: "wan-rtt", Value: rtt, Usage: "the migration link's round-trip time"},
		&cli.StringFlag{Name: "wan-jitter", Value: "0s", Usage: "the migration link's jitter"},
		&cli.DurationFlag{Name: "max-time", Value: mustDuration(maxTime), Usage: "force stop-and-copy after this long"},
		&cli.StringFlag{Name: "lab", Value: "auto", Usage: "auto (libvirt when libvirtd is installed, else QMP), qmp or libvirt"},
		&cli.StringFlag{Name: "out", Value: out, Usage: "where the report (JSON, markdown, PNG plots) goes"},
		&cli.StringFlag{Name: "accel", Value: "auto", Usage: "auto, kvm or tcg"},
		&cli.StringFlag{Name: "qemu", Usage: "QEMU binary (default as for vmigrate lab)"},
		&cli.BoolFlag{Name: "json", Usage: "print the result as JSON instead of the table"},
		unsafeTCGFlag(),
	}
}

func mustDuration(s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return d
}

func ufpeCommand() *cli.Command {
	return &cli.Command{
		Name:  "ufpe",
		Usage: "the UFPE study (2012): web-serving VMs of 512 MB, 1 GB and 2 GB migrate under an open-loop HTTP load",
		Description: `For each size, --repeat rounds, each round every configuration (--configs,
as for bench native; default QEMU's default and vmigrate's codec) once on a
fresh lab: the guest's web server answers vmigrate's load generator at --rate
requests/s, or half of what the guest serves if less (open loop, like
httperf) for --before, through the migration and
for --after; every request's latency and outcome is kept. Writes
ufpe-runs.jsonl (one record per run, as it ends), ufpe.json, ufpe.md and PNG
plots (response time and link throughput over time with the migration's
phases, bars per size) into --out, and the requests of each run as gzip'd CSV
in --out/requests. Needs root; about 40 minutes with the defaults.`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "sizes", Value: "512M,1G,2G", Usage: "guest RAM sizes, comma separated"},
			&cli.StringFlag{Name: "configs", Value: "qemu-default,vmigrate-auto", Usage: "migration configurations (see bench native; on the libvirt lab qemu-default and vmigrate-*)"},
			&cli.Float64Flag{Name: "rate", Value: 3000, Usage: "requests per second (the study's 3000), at most --share of the guest's capacity"},
			&cli.Float64Flag{Name: "share", Value: 0.5, Usage: "the rate is at most this share of the requests/s the guest answers in a closed loop, measured before each run (a TCG guest serves a few hundred); 0: --rate whatever the guest can take"},
			&cli.DurationFlag{Name: "timeout", Value: 2 * time.Second, Usage: "a request not answered in this long is an error"},
			&cli.DurationFlag{Name: "before", Value: 20 * time.Second, Usage: "load before the migration"},
			&cli.DurationFlag{Name: "after", Value: 20 * time.Second, Usage: "load after the migration"},
			&cli.IntFlag{Name: "wss-percent", Value: 25, Usage: "the guest's resident set (memdirty, real file pages) as a share of its RAM; 0 for none"},
			&cli.IntFlag{Name: "dirty-rate", Value: 1000, Usage: "pages of the resident set rewritten per second"},
		}, reproFlags("results/ufpe", "1gbit", "500us", "5m")...),
		Action: ufpeAction,
	}
}

func cloudnetCommand() *cli.Command {
	return &cli.Command{
		Name:  "cloudnet",
		Usage: "CloudNet's table (2011): TPC-W-, kernel-compile- and SPECjbb-like guests over a WAN, default against optimised",
		Description: `For each workload (tpcw, kernel, specjbb: what each stands for is in
the report), --repeat rounds, each round both modes once on a fresh lab:
default is QEMU's own migration and stop rule with no codec, optimised is
vmigrate's tunnel, page codec and smart stop (--optimised). Data sent, total
time and pause time, with CloudNet's figures beside them. Writes
cloudnet-runs.jsonl, cloudnet.json, cloudnet.md and PNG bars into --out.
Needs root; about 40 minutes with the defaults.`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "mem", Value: "1G", Usage: "guest RAM"},
			&cli.StringFlag{Name: "workloads", Value: "tpcw,kernel,specjbb", Usage: "workloads, comma separated"},
			&cli.StringFlag{Name: "modes", Value: "default,optimised", Usage: "modes, comma separated"},
			&cli.StringFlag{Name: "optimised", Value: "vmigrate-auto", Usage: "the optimised mode's configuration (vmigrate-{fast,lz4,max,auto})"},
			&cli.Float64Flag{Name: "request-rate", Value: 200, Usage: "tpcw's web requests per second"},
		}, reproFlags("results/cloudnet", "100mbit", "50ms", "150s")...),
		Action: cloudnetAction,
	}
}

// reproCommon reads the shared flags: the lab, the link, and who ran it.
func reproCommon(c *cli.Context, name string) (libvirt bool, link wanlink.Config, info scenarios.RunInfo, err error) {
	if os.Geteuid() != 0 {
		return false, link, info, withCode(ExitUsage, lab.ErrNotRoot)
	}
	if c.Args().Len() > 0 {
		return false, link, info, withCode(ExitUsage, fmt.Errorf("%s takes no arguments (got %q)", name, c.Args().First()))
	}
	if c.Int("repeat") < 1 || c.Int("repeat") > 100 {
		return false, link, info, withCode(ExitUsage, fmt.Errorf("--repeat %d: want 1 to 100", c.Int("repeat")))
	}
	if c.Duration("max-time") < 10*time.Second {
		return false, link, info, withCode(ExitUsage, fmt.Errorf("--max-time %s: want at least 10s", c.Duration("max-time")))
	}
	switch c.String("lab") {
	case "auto":
		_, err := os.Stat(lab.LibvirtdBin)
		libvirt = err == nil
	case "qmp":
	case "libvirt":
		libvirt = true
	default:
		return false, link, info, withCode(ExitUsage, fmt.Errorf("--lab %q: want auto, qmp or libvirt", c.String("lab")))
	}
	link, err = wanlink.ParseConfig(c.String("wan-bandwidth"), c.String("wan-rtt"), c.String("wan-jitter"))
	if err != nil {
		return false, link, info, withCode(ExitUsage, fmt.Errorf("--wan-*: %w", err))
	}
	host, _ := os.Hostname()
	info = scenarios.RunInfo{Command: "vmigrate " + strings.Join(os.Args[1:], " "), Started: time.Now().UTC().Format(time.RFC3339),
		Go: runtime.Version(), Cores: runtime.NumCPU(), Kernel: kernelRelease(), Host: host}
	return libvirt, link, info, nil
}

// splitList splits a comma separated flag value, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// jsonLines appends records to a file, one JSON object a line, as runs
// end, so an interrupted experiment keeps what it measured.
type jsonLines struct{ f *os.File }

func createJSONLines(path string) (*jsonLines, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &jsonLines{f}, nil
}

func (j *jsonLines) add(v any) {
	if b, err := json.Marshal(v); err == nil {
		j.f.Write(append(b, '\n'))
	}
}

func runStatus(errText string, forced bool) string {
	switch {
	case errText != "":
		return "FAILED: " + errText
	case forced:
		return "forced, verified"
	}
	return "verified"
}

func ufpeAction(c *cli.Context) error {
	e := getEnv(c)
	libvirt, link, info, err := reproCommon(c, "scenario ufpe")
	if err != nil {
		return err
	}
	var sizes []int64
	for _, s := range splitList(c.String("sizes")) {
		n, err := workload.ParseSize(s)
		if err != nil || n < 128<<20 || n%(1<<20) != 0 {
			return withCode(ExitUsage, fmt.Errorf("--sizes: %q: want whole numbers of MiB, at least 128M", s))
		}
		sizes = append(sizes, n)
	}
	if len(sizes) == 0 {
		return withCode(ExitUsage, fmt.Errorf("--sizes: name at least one size"))
	}
	configs := splitList(c.String("configs"))
	for _, cf := range configs {
		if err := scenarios.CheckNativeConfig(cf); err != nil {
			return withCode(ExitUsage, fmt.Errorf("--configs: %w", err))
		}
	}
	if r := c.Float64("rate"); r < 0 || r > 100000 {
		return withCode(ExitUsage, fmt.Errorf("--rate %g: want 0 (no clients) to 100000 requests/s", r))
	}
	if s := c.Float64("share"); s < 0 || s > 1 {
		return withCode(ExitUsage, fmt.Errorf("--share %g: want 0 to 1", s))
	}
	if c.Duration("timeout") <= 0 || c.Duration("before") < time.Second || c.Duration("after") < time.Second {
		return withCode(ExitUsage, fmt.Errorf("--timeout must be positive, --before and --after at least 1s"))
	}
	wss := c.Int("wss-percent")
	if wss < 0 || wss > 75 {
		return withCode(ExitUsage, fmt.Errorf("--wss-percent %d: want 0 to 75", wss))
	}
	md := workload.Config{Name: workload.MemDirty, PagesPerSec: c.Int("dirty-rate"), BytesPerPage: 64, HotFraction: 1, HotWeight: 1, Body: workload.BodyFiles}
	if wss > 0 {
		probe := md
		probe.WSSBytes = 1 << 20
		if err := probe.Validate(); err != nil {
			return withCode(ExitUsage, fmt.Errorf("--dirty-rate: %w", err))
		}
	}
	out, img, err := experimentSetup(c)
	if err != nil {
		return err
	}
	reqDir := filepath.Join(out, "requests")
	if err := os.MkdirAll(reqDir, 0o755); err != nil {
		return err
	}
	runs, err := createJSONLines(filepath.Join(out, "ufpe-runs.jsonl"))
	if err != nil {
		return err
	}
	defer runs.f.Close()
	start := time.Now()
	res, err := scenarios.UFPE(e.ctx, scenarios.UFPEOptions{
		Image: img, Sizes: sizes, Configs: configs, Memdirty: md, WSSPercent: max(wss, 0), Link: link, Repeat: c.Int("repeat"),
		MaxTime: c.Duration("max-time"), Libvirt: libvirt, Keep: reqDir, Info: info,
		Load:  scenarios.LoadOptions{Rate: c.Float64("rate"), Share: c.Float64("share"), Timeout: c.Duration("timeout"), Before: c.Duration("before"), After: c.Duration("after")},
		Accel: c.String("accel"), QEMU: c.String("qemu"), CacheDir: cacheDir(c), AllowUnsafeTCG: c.Bool("allow-unsafe-tcg"), Log: e.log,
		Each: func(r scenarios.UFPERun) {
			runs.add(r)
			fmt.Fprintf(e.stderr, "ufpe: %-4s %-14s run %d: %.1f s, downtime %d ms (observed %d), during: %d requests, %d errors, mean %.1f ms: %s\n",
				scenarios.SizeName(r.MemBytes), r.Config, r.Rep, float64(r.TotalMS)/1000, r.DowntimeMS, r.ObservedMS,
				r.During.Requests, r.During.Requests-r.During.OK, r.During.MeanMS, runStatus(r.Error, r.Forced))
		},
	})
	if err != nil {
		return err
	}
	if wss == 0 {
		res.WSS = 0
	}
	if err := scenarios.WriteUFPEReport(out, res, reportHeader(c, start)); err != nil {
		return err
	}
	if c.Bool("json") {
		return writeJSON(e.stdout, res)
	}
	fmt.Fprint(e.stdout, res.Markdown())
	fmt.Fprintf(e.stdout, "\nwrote %s, %s and the plots in %s\n", filepath.Join(out, "ufpe.json"), filepath.Join(out, "ufpe.md"), out)
	return nil
}

func cloudnetAction(c *cli.Context) error {
	e := getEnv(c)
	libvirt, link, info, err := reproCommon(c, "scenario cloudnet")
	if err != nil {
		return err
	}
	mem, err := memFlag(c)
	if err != nil {
		return err
	}
	wls := splitList(c.String("workloads"))
	for _, w := range wls {
		if w != scenarios.CloudNetTPCW && w != scenarios.CloudNetKernel && w != scenarios.CloudNetSPECjbb {
			return withCode(ExitUsage, fmt.Errorf("--workloads: %q: want tpcw, kernel or specjbb", w))
		}
	}
	modes := splitList(c.String("modes"))
	for _, m := range modes {
		if m != scenarios.ModeDefault && m != scenarios.ModeOptimised {
			return withCode(ExitUsage, fmt.Errorf("--modes: %q: want default or optimised", m))
		}
	}
	if opt := c.String("optimised"); !strings.HasPrefix(opt, "vmigrate-") || scenarios.CheckNativeConfig(opt) != nil {
		return withCode(ExitUsage, fmt.Errorf("--optimised %q: want vmigrate-fast, vmigrate-lz4, vmigrate-max or vmigrate-auto", opt))
	}
	if r := c.Float64("request-rate"); r < 0 || r > 100000 {
		return withCode(ExitUsage, fmt.Errorf("--request-rate %g: want 0 to 100000", r))
	}
	out, img, err := experimentSetup(c)
	if err != nil {
		return err
	}
	runs, err := createJSONLines(filepath.Join(out, "cloudnet-runs.jsonl"))
	if err != nil {
		return err
	}
	defer runs.f.Close()
	start := time.Now()
	res, err := scenarios.CloudNet(e.ctx, scenarios.CloudNetOptions{
		Image: img, MemBytes: mem, Workloads: wls, Modes: modes, Link: link, Repeat: c.Int("repeat"), MaxTime: c.Duration("max-time"),
		Optimised: c.String("optimised"), RequestRate: c.Float64("request-rate"), Libvirt: libvirt, Info: info,
		Accel: c.String("accel"), QEMU: c.String("qemu"), CacheDir: cacheDir(c), AllowUnsafeTCG: c.Bool("allow-unsafe-tcg"), Log: e.log,
		Each: func(r scenarios.CloudNetRun) {
			runs.add(r)
			fmt.Fprintf(e.stderr, "cloudnet: %-8s %-9s run %d: %.1f MiB sent, %.1f s, pause %d ms (observed %d): %s\n",
				r.Workload, r.Mode, r.Rep, float64(r.WireBytes)/(1<<20), float64(r.TotalMS)/1000, r.DowntimeMS, r.ObservedMS, runStatus(r.Error, r.Forced))
		},
	})
	if err != nil {
		return err
	}
	if err := scenarios.WriteCloudNetReport(out, res, reportHeader(c, start)); err != nil {
		return err
	}
	if c.Bool("json") {
		return writeJSON(e.stdout, res)
	}
	fmt.Fprint(e.stdout, res.Markdown())
	fmt.Fprintf(e.stdout, "\nwrote %s, %s and the plots in %s\n", filepath.Join(out, "cloudnet.json"), filepath.Join(out, "cloudnet.md"), out)
	return nil
}
