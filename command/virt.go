package command

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/vmigrate/vmigrate/migrate"
	"github.com/vmigrate/vmigrate/qmp"
)

// DefaultMigrationSocket is where a libvirt migration's stream meets
// vmigrate when a tunnel carries it: the source QEMU connects to it on the
// source host (vmigrate listens there), the destination QEMU listens on it
// on the destination host (`vmigrate tunnel dest --forward unix:PATH`).
const DefaultMigrationSocket = "/run/vmigrate/migration.sock"

// libvirtFlags are run's flags for a libvirt-managed domain.
func libvirtFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "domain", Usage: "migrate this libvirt domain (with --src-uri and --dst-uri) instead of two QMP monitors"},
		&cli.StringFlag{Name: "src-uri", Usage: "libvirt URI of the source host, e.g. qemu:///system"},
		&cli.StringFlag{Name: "dst-uri", Usage: "libvirt URI of the destination host, e.g. qemu+ssh://desthost/system"},
		&cli.StringFlag{Name: "migrate-socket", Usage: "unix socket of the migration stream, the same path on both hosts (default " + DefaultMigrationSocket + " when the tunnel carries the stream; without the tunnel libvirt uses its own TCP transport); with --disk, libvirt's NBD stream uses nbd.sock beside it"},
		&cli.StringFlag{Name: "listen-socket", Usage: "labs: --migrate-socket as this process sees it on the source, when the source daemon has a mount namespace of its own"},
		&cli.StringFlag{Name: "forward-socket", Usage: "labs: --migrate-socket as this process sees it on the destination (an in-process dest end dials it)"},
		&cli.BoolFlag{Name: "p2p", Usage: "peer-to-peer: the source daemon connects to --dst-uri itself (default: managed, vmigrate holds both connections)"},
		&cli.BoolFlag{Name: "keep-source", Usage: "leave the domain defined (shut off) on the source after success (default: undefine it there)"},
		&cli.BoolFlag{Name: "transient", Usage: "do not define the domain on the destination, only run it"},
	}
}

// runLibvirt is `run --domain`.
func runLibvirt(c *cli.Context) error {
	e := getEnv(c)
	for _, f := range []string{"src-qmp", "dst-qmp", "incoming", "nbd-socket", "disk-converge-after"} {
		if c.IsSet(f) {
			return withCode(ExitUsage, fmt.Errorf("--%s is for QMP migrations; --domain migrates through libvirt", f))
		}
	}
	disks := c.StringSlice("disk")
	copyMode, err := diskCopyMode(c)
	if err != nil {
		return err
	}
	if c.String("src-uri") == "" || c.String("dst-uri") == "" {
		return withCode(ExitUsage, fmt.Errorf("--domain needs --src-uri and --dst-uri"))
	}
	if c.String("src-uri") == c.String("dst-uri") {
		return withCode(ExitUsage, fmt.Errorf("--src-uri and --dst-uri are the same: %s", c.String("src-uri")))
	}
	dir, err := os.MkdirTemp("", "vmr")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	transport, _, err := wanTransport(c, e, dir)
	if err != nil {
		return err
	}
	sock := c.String("migrate-socket")
	if sock == "" && transport != nil {
		sock = DefaultMigrationSocket
	}
	if len(disks) > 0 && transport == nil {
		return withCode(ExitUsage, fmt.Errorf("--disk with --domain: libvirt copies the disks through vmigrate's tunnel only; give --tunnel-peer, a --wan-* flag or --codec on"))
	}
	if sock != "" && !filepath.IsAbs(sock) {
		return withCode(ExitUsage, fmt.Errorf("--migrate-socket %q: want an absolute path", sock))
	}
	if sock == "" && (c.IsSet("listen-socket") || c.IsSet("forward-socket")) {
		return withCode(ExitUsage, fmt.Errorf("--listen-socket and --forward-socket need --migrate-socket"))
	}
	listen := c.String("listen-socket")
	if listen == "" {
		listen = sock
	}
	if listen != "" {
		if err := os.MkdirAll(filepath.Dir(listen), 0o700); err != nil {
			return withCode(ExitUsage, fmt.Errorf("--migrate-socket: %w", err))
		}
	}
	pc, err := probeFlag(c)
	if err != nil {
		return err
	}
	policy, err := buildPolicy(c)
	if err != nil {
		return err
	}
	o := migrate.LibvirtOptions{
		Domain: c.String("domain"), SrcURI: c.String("src-uri"), DstURI: c.String("dst-uri"),
		StreamSocket: sock, ListenSocket: listen, ForwardSocket: c.String("forward-socket"),
		P2P: c.Bool("p2p"), KeepSource: c.Bool("keep-source"), Transient: c.Bool("transient"),
		Disks: disks, DiskWriteBlocking: copyMode == qmp.CopyModeWriteBlocking,
		MaxBandwidthMiB: c.Uint64("max-bandwidth"), DowntimeLimitMS: c.Uint64("downtime-limit"),
		Probe: pc, Policy: policy, AllowUnsafeTCG: c.Bool("allow-unsafe-tcg"), PollInterval: c.Duration("poll"),
		Log: e.log,
	}
	if transport != nil {
		o.Transport = transport
	}
	prog := newProgressLine(e.stderr, !c.Bool("json"))
	o.Progress = prog.update
	res, err := migrate.RunLibvirt(e.ctx, o)
	prog.done()
	if c.Bool("json") {
		if jerr := writeJSON(e.stdout, res); jerr != nil {
			return jerr
		}
	} else {
		printResult(e.stdout, res)
	}
	return err
}
