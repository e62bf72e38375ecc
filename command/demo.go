package command

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/vmigrate/vmigrate/migrate"
	"github.com/vmigrate/vmigrate/qmp"
	"github.com/vmigrate/vmigrate/scenarios"
	"github.com/vmigrate/vmigrate/wanlink"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "the main job: migrate the built-in lab guest under load and check it from outside",
		Description: `Builds the guest image if missing, starts the lab (a 512 MB guest dirtying
memory and serving HTTP), migrates it with 'run', checks that it answers at
the same address from the destination and that /verify finds every page
intact, prints a report and tears everything down. Needs root.`,
		Flags: append(append(guestFlags(),
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object with the result"},
			unsafeTCGFlag(),
			&cli.BoolFlag{Name: "direct", Usage: "QEMU to QEMU over TCP inside the lab, no relay and no tunnel (a baseline for measurements)"},
			&cli.Uint64Flag{Name: "max-bandwidth", Usage: "QEMU's max-bandwidth in MiB/s (default: QEMU's own, 128)"},
			&cli.BoolFlag{Name: "libvirt", Usage: "run the lab as two libvirt daemons and migrate the guest as a libvirt domain"},
			&cli.BoolFlag{Name: "virsh", Usage: "with --libvirt: migrate with plain 'virsh migrate --live' through the --wan-* link instead (no tunnel, codec or policy): the baseline"},
		), append(append(wanFlags(), policyFlags()...), diskModeFlags()...)...),
		Action: func(c *cli.Context) error {
			e := getEnv(c)
			copyMode, err := diskCopyMode(c)
			if err != nil {
				return err
			}
			cfg, err := labConfig(c, true)
			if err != nil {
				return err
			}
			dir, err := os.MkdirTemp("", "vmd")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			var transport migrate.Transport
			var path string
			var link *wanlink.Config
			if c.Bool("virsh") {
				if !c.Bool("libvirt") {
					return withCode(ExitUsage, fmt.Errorf("--virsh needs --libvirt"))
				}
				for _, f := range []string{"codec", "policy", "max-bytes", "max-downtime", "on-budget", "codec-seed", "codec-effort", "codec-cache"} {
					if c.IsSet(f) {
						return withCode(ExitUsage, fmt.Errorf("--virsh is plain libvirt: no --%s (--max-time becomes virsh's --timeout)", f))
					}
				}
				if link, err = wanLink(c); err != nil {
					return err
				}
				path = "virsh migrate --live, unix socket"
				if link != nil {
					path += " over an emulated " + link.String() + " link"
				}
			} else if transport, path, err = wanTransport(c, e, dir); err != nil {
				return err
			}
			if c.Bool("direct") && c.Bool("libvirt") {
				return withCode(ExitUsage, fmt.Errorf("--direct is for the QMP lab, not --libvirt"))
			}
			if c.Bool("direct") && transport != nil {
				return withCode(ExitUsage, fmt.Errorf("--direct excludes the --wan-* flags"))
			}
			if c.Bool("direct") {
				path = "direct TCP"
			}
			var params *qmp.MigrationParameters
			if c.IsSet("max-bandwidth") {
				v := c.Uint64("max-bandwidth") << 20
				params = &qmp.MigrationParameters{MaxBandwidth: &v}
			}
			policy, err := buildPolicy(c)
			if err != nil {
				return err
			}
			prog := newProgressLine(e.stderr, !c.Bool("json"))
			res, err := scenarios.Demo(e.ctx, scenarios.DemoOptions{
				Image: cfg.Image, MemBytes: cfg.MemBytes, Workload: cfg.Workload, Accel: cfg.Accel,
				CacheDir: cfg.CacheDir, QEMU: cfg.QEMU, Progress: prog.update, Log: e.log, DiskBytes: cfg.DiskBytes,
				DiskImage: cfg.DiskImage, CompareDisks: cfg.Workload.DiskWSSBytes == 0,
				AllowUnsafeTCG: c.Bool("allow-unsafe-tcg"), Transport: transport, Path: path,
				Direct: c.Bool("direct"), Parameters: params, Policy: policy, Libvirt: c.Bool("libvirt"),
				Virsh: c.Bool("virsh"), Link: link, VirshTimeout: c.Duration("max-time"),
				DiskCopyMode: copyMode, DiskConvergeAfter: c.Duration("disk-converge-after"),
			})
			prog.done()
			if err != nil && res.Error == "" {
				res.Error = err.Error()
			}
			if c.Bool("json") {
				if jerr := writeJSON(e.stdout, res); jerr != nil {
					return jerr
				}
			} else {
				printDemo(e.stdout, res)
			}
			if errors.Is(err, scenarios.ErrVerify) {
				return withCode(ExitVerify, err)
			}
			return err
		},
	}
}

func printDemo(w io.Writer, r scenarios.DemoResult) {
	fmt.Fprintf(w, "vmigrate demo: %s guest (%s), workload %s, accelerator %s, path: %s\n",
		humanBytes(r.MemBytes), r.GuestIP, r.Workload.Name, r.Accel, r.Path)
	if r.AccelReason != "" {
		fmt.Fprintf(w, "  accelerator: %s\n", r.AccelReason)
	}
	if r.QEMU.Binary != "" {
		fmt.Fprintf(w, "  QEMU %s: %s\n", r.QEMU.Version, r.QEMU.Reason)
	}
	if r.AchievedDirtyPPS > 0 {
		fmt.Fprintf(w, "  guest dirtied %.0f pages/s (target %d)\n", r.AchievedDirtyPPS, r.Workload.PagesPerSec)
	}
	printResult(w, r.Result)
	fmt.Fprintf(w, "guest       same address %v, same boot %v, pages checked %d, wrong %d\n",
		r.SameAddress, r.SameBoot, r.PagesChecked, r.PagesWrong)
	if r.BlocksChecked > 0 || r.DisksIdentical || r.DiskDiffer != "" || r.SourceDiskUntouched {
		fmt.Fprintf(w, "disk        blocks checked %d, wrong %d", r.BlocksChecked, r.BlocksWrong)
		if r.DisksIdentical {
			fmt.Fprint(w, "; the destination's image equals the source's")
		} else if r.DiskDiffer != "" {
			fmt.Fprintf(w, "; the destination's image differs: %s", r.DiskDiffer)
		}
		if r.SourceDiskUntouched {
			fmt.Fprint(w, "; the source's image is unchanged outside the workload's blocks")
		}
		fmt.Fprintln(w)
	}
	verdict := "FAILED"
	if r.Verified {
		verdict = "OK: the VM runs on the destination with its memory intact"
		if r.BlocksChecked > 0 || r.DisksIdentical {
			verdict = "OK: the VM runs on the destination with its memory and disk intact"
		}
	}
	fmt.Fprintf(w, "verified    %s\n", verdict)
}
