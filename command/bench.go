package command

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/vmigrate/vmigrate/guest/workload"
	"github.com/vmigrate/vmigrate/scenarios"
	"github.com/vmigrate/vmigrate/wanlink"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "measure vmigrate against other ways of migrating the same guest",
		Subcommands: []*cli.Command{
			{
				Name:  "native",
				Usage: "vmigrate's codec against QEMU's own settings (default, xbzrle, multifd+zstd, auto-converge) through the same emulated link",
				Description: `For each page body (random, text, files: real Debian kernel modules), --repeat
rounds, each round every configuration once on a fresh lab: the guest fills its
working set, then migrates, QEMU's configurations with QEMU's own connections
through the emulated link and QEMU's stop rule, vmigrate's through its tunnel
and page codec with its smart policy; a migration not done after --max-time is
forced to stop and copy. Each is checked with /verify. Writes native.json (every
run) and native.md (medians, and each body's best of both sides) into --out.
Needs root; with the defaults about an hour.`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "bodies", Value: "random,text,files", Usage: "page bodies, comma separated"},
					&cli.StringFlag{Name: "configs", Value: strings.Join(scenarios.NativeConfigs, ","), Usage: "configurations: qemu-default, xbzrle, multifd-zstdN, auto-converge, vmigrate-{fast,lz4,max,auto}"},
					&cli.IntFlag{Name: "repeat", Value: 3, Usage: "rounds per body"},
					&cli.StringFlag{Name: "mem", Value: "512M", Usage: "guest RAM"},
					&cli.StringFlag{Name: "wss", Value: "256M", Usage: "the memdirty working set"},
					&cli.IntFlag{Name: "rate", Value: 5000, Usage: "pages dirtied per second"},
					&cli.IntFlag{Name: "bpp", Value: 8, Usage: "bytes changed per dirtied page"},
					&cli.DurationFlag{Name: "max-time", Value: 150 * time.Second, Usage: "force stop-and-copy after this long"},
					&cli.StringFlag{Name: "wan-bandwidth", Value: "100mbit", Usage: "the emulated link's bandwidth"},
					&cli.StringFlag{Name: "wan-rtt", Value: "50ms", Usage: "the emulated link's round-trip time"},
					&cli.StringFlag{Name: "out", Value: "results/native", Usage: "where native.json and native.md go"},
					&cli.StringFlag{Name: "accel", Value: "auto", Usage: "auto, kvm or tcg"},
					&cli.StringFlag{Name: "qemu", Usage: "QEMU binary (default as for vmigrate lab)"},
					&cli.BoolFlag{Name: "json", Usage: "print the result as JSON instead of the tables"},
				},
				Action: benchNativeAction,
			},
			{
				Name:      "report",
				Usage:     "write native.json and native.md from the runs of one or more benches (native-runs.jsonl), e.g. of an interrupted one",
				ArgsUsage: "RUNS.jsonl...",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "out", Value: "results/native", Usage: "where native.json and native.md go"},
					&cli.StringFlag{Name: "wan-bandwidth", Value: "100mbit", Usage: "the link the runs used, for the report"},
					&cli.StringFlag{Name: "wan-rtt", Value: "50ms", Usage: "the link the runs used, for the report"},
					&cli.DurationFlag{Name: "max-time", Value: 150 * time.Second, Usage: "the budget the runs used, for the report"},
					&cli.BoolFlag{Name: "json", Usage: "print the result as JSON instead of the tables"},
				},
				Action: benchReportAction,
			},
		},
	}
}

func benchNativeAction(c *cli.Context) error {
	e := getEnv(c)
	mem, err := experimentFlags(c, "bench native")
	if err != nil {
		return err
	}
	var bodies []string
	for _, b := range strings.Split(c.String("bodies"), ",") {
		b = strings.TrimSpace(b)
		if b != workload.BodyRandom && b != workload.BodyText && b != workload.BodyFiles {
			return withCode(ExitUsage, fmt.Errorf("--bodies: %q: want random, text or files", b))
		}
		bodies = append(bodies, b)
	}
	var configs []string
	for _, cf := range strings.Split(c.String("configs"), ",") {
		cf = strings.TrimSpace(cf)
		if err := scenarios.CheckNativeConfig(cf); err != nil {
			return withCode(ExitUsage, fmt.Errorf("--configs: %w", err))
		}
		configs = append(configs, cf)
	}
	wss, err := workload.ParseSize(c.String("wss"))
	if err != nil || wss < 1<<20 || wss%4096 != 0 || wss > mem*3/4 {
		return withCode(ExitUsage, fmt.Errorf("--wss %q: want a multiple of 4K from 1M to three quarters of --mem", c.String("wss")))
	}
	w := workload.Config{Name: workload.MemDirty, WSSBytes: wss, PagesPerSec: c.Int("rate"), BytesPerPage: c.Int("bpp"), HotFraction: 1, HotWeight: 1}
	if err := w.Validate(); err != nil {
		return withCode(ExitUsage, fmt.Errorf("--rate/--bpp: %w", err))
	}
	if c.Duration("max-time") < 10*time.Second {
		return withCode(ExitUsage, fmt.Errorf("--max-time %s: want at least 10s", c.Duration("max-time")))
	}
	link, err := wanlink.ParseConfig(c.String("wan-bandwidth"), c.String("wan-rtt"), "0s")
	if err != nil {
		return withCode(ExitUsage, fmt.Errorf("--wan-*: %w", err))
	}
	out, img, err := experimentSetup(c)
	if err != nil {
		return err
	}
	// Each run is appended as it ends, so that an interrupted bench keeps
	// what it measured.
	runs, err := os.Create(filepath.Join(out, "native-runs.jsonl"))
	if err != nil {
		return err
	}
	defer runs.Close()
	start := time.Now()
	res, err := scenarios.Native(e.ctx, scenarios.NativeOptions{
		Image: img, MemBytes: mem, Workload: w, Bodies: bodies, Configs: configs, Link: link, Repeat: c.Int("repeat"),
		MaxTime: c.Duration("max-time"), Accel: c.String("accel"), QEMU: c.String("qemu"), CacheDir: cacheDir(c), Log: e.log,
		Each: func(r scenarios.NativeRun) {
			status := "verified"
			switch {
			case r.Error != "":
				status = "FAILED: " + r.Error
			case r.Forced:
				status = "forced, verified"
			}
			if b, err := json.Marshal(r); err == nil {
				runs.Write(append(b, '\n'))
			}
			fmt.Fprintf(e.stderr, "native: %-6s %-14s run %d: %.1f MiB on the wire, %.1f s, downtime %d ms (observed %d): %s\n",
				r.Body, r.Config, r.Rep, float64(r.WireBytes)/(1<<20), float64(r.TotalMS)/1000, r.DowntimeMS, r.ObservedMS, status)
		},
	})
	if err != nil {
		return err
	}
	if err := scenarios.WriteNativeReport(out, res, reportHeader(c, start)); err != nil {
		return err
	}
	if c.Bool("json") {
		return writeJSON(e.stdout, res)
	}
	fmt.Fprint(e.stdout, res.Markdown())
	fmt.Fprintf(e.stdout, "\nwrote %s and %s\n", filepath.Join(out, "native.json"), filepath.Join(out, "native.md"))
	return nil
}

func benchReportAction(c *cli.Context) error {
	e := getEnv(c)
	if c.Args().Len() == 0 {
		return withCode(ExitUsage, fmt.Errorf("bench report: name one or more native-runs.jsonl files"))
	}
	link, err := wanlink.ParseConfig(c.String("wan-bandwidth"), c.String("wan-rtt"), "0s")
	if err != nil {
		return withCode(ExitUsage, fmt.Errorf("--wan-*: %w", err))
	}
	var runs []scenarios.NativeRun
	for _, path := range c.Args().Slice() {
		b, err := os.ReadFile(path)
		if err != nil {
			return withCode(ExitUsage, err)
		}
		for i, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var r scenarios.NativeRun
			if err := json.Unmarshal([]byte(line), &r); err != nil || r.Body == "" || r.Config == "" {
				return withCode(ExitUsage, fmt.Errorf("%s:%d: not a run of bench native (%v)", path, i+1, err))
			}
			runs = append(runs, r)
		}
	}
	var mem int64
	var w workload.Config
	if r := runs[0].Result; r != nil {
		mem, w = r.MemBytes, r.Workload
		w.Body = ""
	}
	res := scenarios.NativeFromRuns(runs, link.String(), mem, w, c.Duration("max-time").String())
	header := fmt.Sprintf("Runs: %s (vmigrate bench report)  \n\n", strings.Join(c.Args().Slice(), ", "))
	if err := scenarios.WriteNativeReport(c.String("out"), res, header); err != nil {
		return err
	}
	if c.Bool("json") {
		return writeJSON(e.stdout, res)
	}
	fmt.Fprint(e.stdout, res.Markdown())
	return nil
}
