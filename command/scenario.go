package command

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/vmigrate/vmigrate/blockindex"
	"github.com/vmigrate/vmigrate/guest"
	"github.com/vmigrate/vmigrate/guest/workload"
	"github.com/vmigrate/vmigrate/lab"
	"github.com/vmigrate/vmigrate/scenarios"
	"github.com/vmigrate/vmigrate/wanlink"
)

func scenarioCommand() *cli.Command {
	return &cli.Command{
		Name:  "scenario",
		Usage: "reproduce a published experiment on the lab and write its report",
		Subcommands: []*cli.Command{
			{
				Name:  "lai",
				Usage: "Lai et al. (2013): a disk with an OS moves to a host holding a sibling OS image, plain against the block codec and the neighbour index",
				Description: `Builds the two OS images (vmigrate guest osimage) and the destination's index
of variant 1, then migrates a guest whose disk is variant 0 through an emulated
WAN (default 100 Mbit/s, 50 ms RTT, Lai et al.'s link) in each mode, --repeat
times, interleaved, each on a fresh lab:
  plain  the tunnel without codecs: the mirror's NBD traffic as QEMU sends it
  codec  vmigrate's page and block codecs, no index
  index  both codecs and the neighbour index
Each move is verified (memory, and the destination's disk byte for byte).
Writes lai.json (every run) and lai.md (medians, the paper's figures beside
them) into --out. Needs root; about 10 minutes with the defaults.`,
				Flags: []cli.Flag{
					&cli.IntFlag{Name: "repeat", Value: 3, Usage: "runs per mode"},
					&cli.StringFlag{Name: "modes", Value: "plain,codec,index", Usage: "which modes, comma separated"},
					&cli.StringFlag{Name: "mem", Value: "512M", Usage: "guest RAM"},
					&cli.StringFlag{Name: "os-size", Value: "2G", Usage: "the guest disk's size (OS image variant 0)"},
					&cli.StringFlag{Name: "wan-bandwidth", Value: "100mbit", Usage: "the emulated link's bandwidth"},
					&cli.StringFlag{Name: "wan-rtt", Value: "50ms", Usage: "the emulated link's round-trip time"},
					&cli.StringFlag{Name: "wan-jitter", Value: "0s", Usage: "the emulated link's jitter"},
					&cli.StringFlag{Name: "out", Value: "results/lai", Usage: "where lai.json, lai.md and the index go"},
					&cli.StringFlag{Name: "accel", Value: "auto", Usage: "auto, kvm or tcg"},
					&cli.StringFlag{Name: "qemu", Usage: "QEMU binary (default as for vmigrate lab)"},
					&cli.BoolFlag{Name: "json", Usage: "print the result as JSON instead of the table"},
					unsafeTCGFlag(),
				},
				Action: laiAction,
			},
			ufpeCommand(),
			cloudnetCommand(),
		},
	}
}

func laiAction(c *cli.Context) error {
	e := getEnv(c)
	mem, err := experimentFlags(c, "scenario lai")
	if err != nil {
		return err
	}
	var modes []string
	for _, m := range strings.Split(c.String("modes"), ",") {
		m = strings.TrimSpace(m)
		if m != scenarios.LaiPlain && m != scenarios.LaiCodec && m != scenarios.LaiIndex {
			return withCode(ExitUsage, fmt.Errorf("--modes: %q: want plain, codec or index", m))
		}
		modes = append(modes, m)
	}
	size, err := workload.ParseSize(c.String("os-size"))
	if err != nil || size < 1<<30 || size%(1<<20) != 0 {
		return withCode(ExitUsage, fmt.Errorf("--os-size %q: want a whole number of MiB, at least 1G", c.String("os-size")))
	}
	link, err := wanlink.ParseConfig(c.String("wan-bandwidth"), c.String("wan-rtt"), c.String("wan-jitter"))
	if err != nil {
		return withCode(ExitUsage, fmt.Errorf("--wan-*: %w", err))
	}
	out, img, err := experimentSetup(c)
	if err != nil {
		return err
	}
	osi, err := lab.BuildOSImages(e.ctx, lab.OSImageOptions{CacheDir: cacheDir(c), Size: size, Log: e.stderr})
	if err != nil {
		return err
	}
	start := time.Now()
	res, err := scenarios.Lai(e.ctx, scenarios.LaiOptions{
		Image: img, OS: osi, MemBytes: mem, Link: link, Repeat: c.Int("repeat"), Modes: modes,
		IndexPath: filepath.Join(out, "neighbours.idx"), Accel: c.String("accel"), QEMU: c.String("qemu"),
		CacheDir: cacheDir(c), AllowUnsafeTCG: c.Bool("allow-unsafe-tcg"), Log: e.log,
		Each: func(r scenarios.LaiRun) {
			status := "verified, disks identical"
			if r.Error != "" {
				status = "FAILED: " + r.Error
			}
			fmt.Fprintf(e.stderr, "lai: %-5s run %d: %s on the wire (disk %s), %.1f s, downtime %d ms: %s\n", r.Mode, r.Rep,
				blockindex.FormatBytes(r.WireBytes), blockindex.FormatBytes(r.DiskWireBytes), float64(r.TotalMS)/1000, r.DowntimeMS, status)
		},
	})
	if err != nil {
		return err
	}
	header := reportHeader(c, start)
	if err := scenarios.WriteLaiReport(out, res, header); err != nil {
		return err
	}
	if c.Bool("json") {
		return writeJSON(e.stdout, res)
	}
	fmt.Fprint(e.stdout, res.Markdown())
	fmt.Fprintf(e.stdout, "\nwrote %s and %s\n", filepath.Join(out, "lai.json"), filepath.Join(out, "lai.md"))
	return nil
}

// experimentSetup checks --accel, makes --out and finds (or builds) the
// guest image: what every experiment does after reading its own flags.
func experimentSetup(c *cli.Context) (out string, img guest.Image, err error) {
	e := getEnv(c)
	if err := accelFlag(c); err != nil {
		return "", img, err
	}
	out = c.String("out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", img, withCode(ExitUsage, fmt.Errorf("--out: %w", err))
	}
	gopts := guest.BuildOptions{CacheDir: guestCache(c), Log: e.stderr}
	if img, err = guest.Find(e.ctx, gopts); err != nil {
		fmt.Fprintln(e.stderr, "vmigrate: building the guest image (once; it is cached in "+gopts.CacheDir+")")
		img, err = guest.Build(e.ctx, gopts)
	}
	return out, img, err
}

// experimentFlags reads what every experiment checks first: root, no
// arguments, --repeat and --mem.
func experimentFlags(c *cli.Context, name string) (mem int64, err error) {
	if os.Geteuid() != 0 {
		return 0, withCode(ExitUsage, lab.ErrNotRoot)
	}
	if c.Args().Len() > 0 {
		return 0, withCode(ExitUsage, fmt.Errorf("%s takes no arguments (got %q)", name, c.Args().First()))
	}
	if c.Int("repeat") < 1 || c.Int("repeat") > 100 {
		return 0, withCode(ExitUsage, fmt.Errorf("--repeat %d: want 1 to 100", c.Int("repeat")))
	}
	return memFlag(c)
}

// reportHeader says how a report was made: the command, when, on what.
func reportHeader(c *cli.Context, start time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Command: `vmigrate %s`  \n", strings.Join(os.Args[1:], " "))
	fmt.Fprintf(&b, "Run: %s, %.0f s; %s, %d cores, %s  \n\n", start.UTC().Format(time.RFC3339), time.Since(start).Seconds(),
		runtime.Version(), runtime.NumCPU(), kernelRelease())
	return b.String()
}

func kernelRelease() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "Linux"
	}
	return "Linux " + strings.TrimSpace(string(b))
}
