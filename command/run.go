package command

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/vmigrate/vmigrate/lab"
	"github.com/vmigrate/vmigrate/migrate"
	"github.com/vmigrate/vmigrate/probe"
	"github.com/vmigrate/vmigrate/qmp"
)

func runCommand() *cli.Command {
	return &cli.Command{
		Name:  "run",
		Usage: "live-migrate the VM behind --src-qmp to the QEMU behind --dst-qmp, or a libvirt --domain",
		Description: `The destination QEMU must have been started with the same machine type and
devices as the source, and -incoming defer. vmigrate opens its incoming side,
runs pre-copy, and returns once the VM runs on the destination.

QMP addresses: a unix socket path (or unix:PATH), or tcp:HOST:PORT.

With --domain NAME --src-uri URI --dst-uri URI, libvirt migrates the domain
(live; defined on the destination, undefined on the source on success) and
vmigrate carries the stream and decides when pre-copy stops, as with QMP.
Exit codes: 0 the VM runs on the destination; 1 failed, the source runs;
2 bad input, nothing changed; 3 interrupted, the source runs; 4 failed and
the source could not be confirmed running.`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "src-qmp", Usage: "QMP of the source QEMU"},
			&cli.StringFlag{Name: "dst-qmp", Usage: "QMP of the destination QEMU (started with -incoming defer)"},
			&cli.StringFlag{Name: "incoming", Usage: "where the destination listens: unix:PATH or tcp:HOST:PORT (default: a unix socket beside a unix --dst-qmp, or tcp:QMPHOST:0)"},
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object with the result at the end"},
			&cli.DurationFlag{Name: "connect-timeout", Value: 10 * time.Second, Usage: "how long to wait for each QMP monitor"},
			&cli.DurationFlag{Name: "poll", Value: migrate.DefaultPollInterval, Usage: "how often to read QEMU's counters"},
			&cli.Uint64Flag{Name: "max-bandwidth", Usage: "QEMU's max-bandwidth for pre-copy, MiB/s (default: leave QEMU's)"},
			&cli.Uint64Flag{Name: "downtime-limit", Usage: "QEMU's downtime-limit in ms (default: leave QEMU's)"},
			unsafeTCGFlag(),
			&cli.StringFlag{Name: "probe", Usage: "URL the guest answers (e.g. http://10.0.0.5/); it is requested every 10 ms during the migration to measure the downtime clients see"},
			&cli.StringSliceFlag{Name: "disk", Usage: "mirror this block node (e.g. vda; the same node name on the destination, a pre-created image of the same size) before the RAM moves; repeat for more disks"},
			&cli.StringFlag{Name: "nbd-socket", Usage: "with --disk: unix socket for the destination's NBD server, as its QEMU sees it (default: beside a unix --dst-qmp)"},
		}, append(append(append(append(wanFlags(), tunnelFlags()...), policyFlags()...), libvirtFlags()...), diskModeFlags()...)...),
		Action: func(c *cli.Context) error {
			e := getEnv(c)
			if c.Args().Len() > 0 {
				return withCode(ExitUsage, fmt.Errorf("run: unexpected arguments %q", c.Args().Slice()))
			}
			if c.IsSet("domain") {
				return runLibvirt(c)
			}
			for _, f := range []string{"src-uri", "dst-uri", "migrate-socket", "listen-socket", "forward-socket", "p2p", "keep-source", "transient"} {
				if c.IsSet(f) {
					return withCode(ExitUsage, fmt.Errorf("--%s needs --domain", f))
				}
			}
			if c.String("src-qmp") == "" || c.String("dst-qmp") == "" {
				return withCode(ExitUsage, fmt.Errorf("give --src-qmp and --dst-qmp, or --domain with --src-uri and --dst-uri"))
			}
			incoming := c.String("incoming")
			if incoming == "" {
				incoming = defaultIncoming(c.String("dst-qmp"))
			} else if err := checkURI(incoming); err != nil {
				return withCode(ExitUsage, fmt.Errorf("--incoming: %w", err))
			}
			disks, nbd, err := diskFlags(c)
			if err != nil {
				return err
			}
			var params *qmp.MigrationParameters
			if c.IsSet("max-bandwidth") || c.IsSet("downtime-limit") {
				params = &qmp.MigrationParameters{}
				if c.IsSet("max-bandwidth") {
					v := c.Uint64("max-bandwidth") << 20
					params.MaxBandwidth = &v
				}
				if c.IsSet("downtime-limit") {
					v := c.Uint64("downtime-limit")
					params.DowntimeLimit = &v
				}
			}
			src, dst, err := dialBoth(e.ctx, c.String("src-qmp"), c.String("dst-qmp"), c.Duration("connect-timeout"))
			if err != nil {
				return withCode(ExitUsage, err)
			}
			defer src.Close()
			defer dst.Close()
			dir, err := os.MkdirTemp("", "vmr")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			transport, _, err := wanTransport(c, e, dir)
			if err != nil {
				return err
			}
			relayDir := ""
			if strings.HasPrefix(incoming, "unix:") {
				relayDir = dir
			}
			pc, err := probeFlag(c)
			if err != nil {
				return err
			}
			policy, err := buildPolicy(c)
			if err != nil {
				return err
			}
			prog := newProgressLine(e.stderr, true)
			res, err := migrate.Run(e.ctx, migrate.Options{
				Src: src, Dst: dst, IncomingURI: incoming, RelayDir: relayDir, Transport: transport,
				Parameters: params, PollInterval: c.Duration("poll"), AllowUnsafeTCG: c.Bool("allow-unsafe-tcg"),
				Progress: prog.update, Log: e.log, Probe: pc, Policy: policy,
				Disks: disks, NBDSocket: nbd, DiskCopyMode: c.String("disk-copy-mode"), DiskConvergeAfter: c.Duration("disk-converge-after"),
			})
			prog.done()
			if err == nil {
				learnImages(e, transport, res.Disks)
			}
			if c.Bool("json") {
				if jerr := writeJSON(e.stdout, res); jerr != nil {
					return jerr
				}
			} else {
				printResult(e.stdout, res)
			}
			return err
		},
	}
}

// diskModeFlags say how disks are mirrored (run and demo).
func diskModeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "disk-copy-mode", Value: "background", Usage: "disks: background, or write-blocking (guest writes wait until copied: converges whatever the write rate)"},
		&cli.DurationFlag{Name: "disk-converge-after", Value: 30 * time.Second, Usage: "disks: a background mirror not in sync after this long turns write-blocking (QEMU 8.2+; 0: never)"},
		&cli.StringFlag{Name: "disk-codec", Value: "on", Usage: "disks: the tunnel's block codec on each disk channel (zero, reference to a block the destination holds, LZ4/DEFLATE, raw): on|off"},
		&cli.StringFlag{Name: "disk-block-size", Value: "64K", Usage: "disks: the block codec's compression unit, a power of two from 4K to 1M"},
		&cli.StringFlag{Name: "disk-index", Usage: "disks: the destination's neighbour index (vmigrate index build), when the dest end runs here; the migrated images are added to it (with --tunnel-peer, give it to vmigrate tunnel dest)"},
	}
}

// diskCopyMode reads --disk-copy-mode (run and demo).
func diskCopyMode(c *cli.Context) (string, error) {
	switch m := c.String("disk-copy-mode"); m {
	case qmp.CopyModeBackground, qmp.CopyModeWriteBlocking:
		return m, nil
	default:
		return "", withCode(ExitUsage, fmt.Errorf("--disk-copy-mode %q: want background or write-blocking", m))
	}
}

// probeFlag reads --probe: nil without it.
func probeFlag(c *cli.Context) (*probe.Config, error) {
	u := c.String("probe")
	if u == "" {
		return nil, nil
	}
	pc, err := httpProbe(u)
	if err != nil {
		return nil, withCode(ExitUsage, fmt.Errorf("--probe: %w", err))
	}
	return pc, nil
}

// diskFlags reads --disk and --nbd-socket.
func diskFlags(c *cli.Context) ([]string, string, error) {
	disks := c.StringSlice("disk")
	nbd := c.String("nbd-socket")
	if _, err := diskCopyMode(c); err != nil {
		return nil, "", err
	}
	if len(disks) == 0 {
		if nbd != "" {
			return nil, "", withCode(ExitUsage, fmt.Errorf("--nbd-socket needs --disk"))
		}
		return nil, "", nil
	}
	seen := map[string]bool{}
	for _, d := range disks {
		if d == "" || strings.ContainsAny(d, " ,:/") || seen[d] {
			return nil, "", withCode(ExitUsage, fmt.Errorf("--disk %q: want a block node name, once each", d))
		}
		seen[d] = true
	}
	if nbd == "" {
		a := strings.TrimPrefix(c.String("dst-qmp"), "unix:")
		if strings.HasPrefix(c.String("dst-qmp"), "tcp:") || !strings.Contains(a, "/") {
			return nil, "", withCode(ExitUsage, fmt.Errorf("--disk with a TCP --dst-qmp needs --nbd-socket (a unix socket on the destination host)"))
		}
		nbd = filepath.Join(filepath.Dir(a), fmt.Sprintf("vmigrate-nbd-%d.sock", os.Getpid()))
	}
	return disks, nbd, nil
}

func unsafeTCGFlag() cli.Flag {
	return &cli.BoolFlag{Name: "allow-unsafe-tcg", Usage: "migrate a TCG guest even on QEMU < 9.0, which loses guest writes during the migration"}
}

// dialBoth connects to both monitors; an error names the side.
func dialBoth(ctx context.Context, srcAddr, dstAddr string, timeout time.Duration) (*qmp.Client, *qmp.Client, error) {
	if srcAddr == dstAddr {
		return nil, nil, fmt.Errorf("--src-qmp and --dst-qmp are the same monitor %s", srcAddr)
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	src, err := qmp.Dial(dctx, srcAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("source QMP: %w", err)
	}
	dst, err := qmp.Dial(dctx, dstAddr)
	if err != nil {
		src.Close()
		return nil, nil, fmt.Errorf("destination QMP: %w", err)
	}
	return src, dst, nil
}

// defaultIncoming picks where the destination listens when not told: a
// unix socket beside a local destination monitor, else a TCP port chosen
// by the destination on the monitor's host.
func defaultIncoming(dstQMP string) string {
	a := strings.TrimPrefix(dstQMP, "unix:")
	if strings.HasPrefix(dstQMP, "tcp:") || (!strings.HasPrefix(dstQMP, "unix:") && !strings.Contains(a, "/") && strings.Contains(a, ":")) {
		host := strings.TrimPrefix(dstQMP, "tcp:")
		if i := strings.LastIndex(host, ":"); i >= 0 {
			host = host[:i]
		}
		return "tcp:" + host + ":0"
	}
	return "unix:" + filepath.Join(filepath.Dir(a), fmt.Sprintf("vmigrate-incoming-%d.sock", os.Getpid()))
}

// httpProbe probes a URL with GET, each request on a new connection, as a
// new client would arrive.
func httpProbe(raw string) (*probe.Config, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an http(s) URL", raw)
	}
	// One kept-alive connection (as Lab.ProbeClient): a fresh one per
	// request would measure SYN retransmission timers, not the guest.
	// Its dials are bounded as the lab's prober's (lab.ProbeDialTimeout).
	dial := lab.BoundDial((&net.Dialer{}).DialContext, lab.ProbeDialTimeout)
	client := &http.Client{Transport: &http.Transport{DialContext: dial, MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute}}
	return &probe.Config{Send: func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, raw, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			return fmt.Errorf("probe: %s", resp.Status)
		}
		return nil
	}}, nil
}

func checkURI(u string) error {
	switch {
	case strings.HasPrefix(u, "unix:") && len(u) > len("unix:"):
		return nil
	case strings.HasPrefix(u, "tcp:") && strings.Count(u, ":") >= 2:
		return nil
	}
	return fmt.Errorf("%q is not unix:PATH or tcp:HOST:PORT", u)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printResult(w io.Writer, r migrate.Result) {
	fmt.Fprintf(w, "status      %s\n", r.Status)
	if r.Error != "" {
		fmt.Fprintf(w, "error       %s\n", r.Error)
	}
	fmt.Fprintf(w, "total       %.2f s (QEMU %.2f s, setup %d ms)\n", float64(r.TotalMS)/1000, float64(r.QEMUTotal)/1000, r.SetupMS)
	if r.Probe != nil {
		fmt.Fprintf(w, "downtime    %d ms (QEMU), %d ms seen by the prober (%d of %d requests answered)\n", r.DowntimeMS, r.ObservedDowntimeMS, r.Probe.Answered, r.Probe.Sent)
	} else {
		fmt.Fprintf(w, "downtime    %d ms (QEMU)\n", r.DowntimeMS)
	}
	fmt.Fprintf(w, "stream      %s (%s); RAM %s\n", humanBytes(r.StreamBytes), r.StreamBytesSource, humanBytes(r.RAMBytes))
	if r.WireBytes > 0 {
		fmt.Fprintf(w, "wire        %s crossed the emulated link (both directions)\n", humanBytes(r.WireBytes))
	}
	if c := r.Codec; c != nil && c.StreamBytes > 0 {
		p := c.Pages
		fmt.Fprintf(w, "codec       %s encoded into %s (%.1f %%), %.0f ms of CPU; pages: %d delta, %d ref, %d seed, %d lz4, %d zstd, %d raw, %d zero; %d zero records; cache %s of %s\n",
			humanBytes(c.StreamBytes), humanBytes(c.EncodedBytes), 100*float64(c.EncodedBytes)/float64(c.StreamBytes), c.CPUMillis,
			p.Delta.Pages, p.Ref.Pages, p.Seed.Pages, p.LZ4.Pages, p.Zstd.Pages, p.Raw.Pages, p.Zero.Pages, c.ZeroRecords.Pages, humanBytes(c.CacheBytes), humanBytes(c.CacheMaxBytes))
		e := c.EffortMs
		fmt.Fprintf(w, "effort      %s: %.1f s fast, %.1f s lz4, %.1f s max\n", c.Effort, e.Fast/1000, e.LZ4/1000, e.Max/1000)
	}
	fmt.Fprintf(w, "passes      %d (policy %s)\n", len(r.Passes), r.Policy)
	if d := r.Decision; d != nil {
		fmt.Fprintf(w, "decision    %s after pass %d at %d ms: %s\n", d.Action, d.Pass, d.DecidedAtMS, d.Reason)
	}
	for _, p := range r.Passes {
		fmt.Fprintf(w, "  pass %-3d at %6d ms  remaining %9s  sent %9s  dirty %d pages/s\n",
			p.Pass, p.TMS, humanBytes(p.RemainingBytes), humanBytes(p.TransferredBytes), p.DirtyPagesRate)
	}
	fmt.Fprintf(w, "source      %s\n", r.SourceStatus)
	if r.DestStatus != "" {
		fmt.Fprintf(w, "destination %s\n", r.DestStatus)
	}
}
