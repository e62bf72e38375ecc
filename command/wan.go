package command

import (
	"fmt"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"github.com/vmigrate/vmigrate/blockcodec"
	"github.com/vmigrate/vmigrate/blockindex"
	"github.com/vmigrate/vmigrate/blockmirror"
	"github.com/vmigrate/vmigrate/guest/workload"
	"github.com/vmigrate/vmigrate/migrate"
	"github.com/vmigrate/vmigrate/pagecodec"
	"github.com/vmigrate/vmigrate/tunnel"
	"github.com/vmigrate/vmigrate/wanlink"
	"github.com/vmigrate/vmigrate/wanpath"
)

// wanFlags route a migration through vmigrate's tunnel and, when asked,
// an emulated WAN link.
func wanFlags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "wan-bandwidth", Usage: "emulate a WAN link of this bandwidth (e.g. 100mbit) between the tunnel's ends"},
		&cli.StringFlag{Name: "wan-rtt", Usage: "the emulated link's round-trip time (e.g. 50ms)"},
		&cli.StringFlag{Name: "wan-jitter", Usage: "the emulated link's extra one-way delay, uniform in [0, jitter]"},
		&cli.StringFlag{Name: "codec", Usage: "page codec in the tunnel (deltas, references, lz4): on|off; default on whenever the stream goes through the tunnel, and on alone it routes the stream through one"},
		&cli.StringFlag{Name: "codec-seed", Usage: "the in-process dest end keeps the pages it received in this file and offers them to the next migration (a remote dest end: vmigrate tunnel dest --codec-seed)"},
	}, encoderFlags()...)
}

// encoderFlags set up the codec's encoder (run, demo, tunnel source).
func encoderFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "codec-cache", Usage: "page cache of the codec at each end, e.g. 1G (default: the guest's RAM up to 2G, a quarter of it beyond, 64M..8G)"},
		&cli.StringFlag{Name: "codec-effort", Value: "auto", Usage: "how hard the codec compresses pages it cannot send as deltas or references: fast (not at all), lz4, max (zstd with a window over the pages sent before, so what pages share is sent once; disks: deflate where smaller than lz4), or auto: harder while the link keeps the codec waiting, less while the link waits for it"},
	}
}

// codecFlags reads --codec, --codec-cache, --codec-effort and
// --codec-seed; nil means no codec. def is the answer when --codec is not
// given.
func codecFlags(c *cli.Context, def bool) (*pagecodec.Codec, error) {
	on := def
	switch v := c.String("codec"); v {
	case "":
	case "on":
		on = true
	case "off":
		on = false
	default:
		return nil, withCode(ExitUsage, fmt.Errorf("--codec %q: want on or off", v))
	}
	var cfg pagecodec.Config
	if v := c.String("codec-cache"); v != "" {
		n, err := workload.ParseSize(v)
		if err != nil || n < pagecodec.PageSize {
			return nil, withCode(ExitUsage, fmt.Errorf("--codec-cache %q: want a size of at least 4K", v))
		}
		if !on {
			return nil, withCode(ExitUsage, fmt.Errorf("--codec-cache needs the codec (it is off)"))
		}
		cfg.CacheBytes = int64(n)
	}
	if v := c.String("codec-effort"); v != "" {
		eff, err := pagecodec.ParseEffort(v)
		if err != nil {
			return nil, withCode(ExitUsage, fmt.Errorf("--codec-effort: %w", err))
		}
		if !on && (eff != pagecodec.EffortAuto || c.IsSet("codec-effort")) {
			return nil, withCode(ExitUsage, fmt.Errorf("--codec-effort needs the codec (it is off)"))
		}
		cfg.Effort = eff
	}
	cfg.SeedFile = c.String("codec-seed")
	if cfg.SeedFile != "" && !on {
		return nil, withCode(ExitUsage, fmt.Errorf("--codec-seed needs the codec (it is off)"))
	}
	if !on {
		return nil, nil
	}
	return pagecodec.New(cfg), nil
}

// tunnelFlags reach a tunnel dest end on another host.
func tunnelFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "tunnel-peer", Usage: "HOST:PORT of `vmigrate tunnel dest` on the destination host; the stream goes through the tunnel"},
		&cli.StringFlag{Name: "psk-file", Usage: "pre-shared key file (vmigrate tunnel keygen) authenticating the tunnel"},
		&cli.StringFlag{Name: "tls-ca", Usage: "CA certificate (PEM) for certificate authentication (vmigrate tunnel certs)"},
		&cli.StringFlag{Name: "tls-cert", Usage: "this end's certificate (PEM)"},
		&cli.StringFlag{Name: "tls-key", Usage: "this end's private key (PEM)"},
		&cli.BoolFlag{Name: "insecure", Usage: "tunnel in clear text without authentication (never across a network you do not trust)"},
		&cli.StringFlag{Name: "tunnel-window", Usage: "bytes a tunnel channel may have in flight, e.g. 8M; one channel moves at most this per round trip, so give at least bandwidth x RTT (default 1M, or 2 x the emulated link's BDP)"},
	}
}

// tunnelAuth reads the authentication flags of one tunnel end. With none
// given it returns ok=false.
func tunnelAuth(c *cli.Context, e *env, role string) (cfg tunnel.Config, ok bool, err error) {
	modes := 0
	if p := c.String("psk-file"); p != "" {
		modes++
		if cfg.PSK, err = tunnel.LoadKey(p); err != nil {
			return cfg, false, withCode(ExitUsage, fmt.Errorf("--psk-file: %w", err))
		}
	}
	if c.String("tls-ca") != "" || c.String("tls-cert") != "" || c.String("tls-key") != "" {
		modes++
		if cfg.Certs, err = tunnel.LoadCerts(c.String("tls-ca"), c.String("tls-cert"), c.String("tls-key"), ""); err != nil {
			return cfg, false, withCode(ExitUsage, fmt.Errorf("--tls-ca/--tls-cert/--tls-key: %w", err))
		}
	}
	if c.Bool("insecure") {
		modes++
		cfg.Insecure = true
		e.log.Warn("tunnel " + role + ": --insecure: the migration stream (the VM's whole memory) crosses the network in clear text, and any peer is accepted")
	}
	if modes > 1 {
		return cfg, false, withCode(ExitUsage, fmt.Errorf("give one of --psk-file, --tls-ca/--tls-cert/--tls-key and --insecure"))
	}
	if w := c.String("tunnel-window"); w != "" {
		n, err := workload.ParseSize(w)
		if err != nil || n < tunnel.MinWindow || n > tunnel.MaxWindow {
			return cfg, false, withCode(ExitUsage, fmt.Errorf("--tunnel-window %q: want a size from %d to %d bytes", w, tunnel.MinWindow, tunnel.MaxWindow))
		}
		cfg.Window = int(n)
	}
	return cfg, modes == 1, nil
}

// wanLink reads the --wan-* flags: nil when none is given.
func wanLink(c *cli.Context) (*wanlink.Config, error) {
	if !c.IsSet("wan-bandwidth") && !c.IsSet("wan-rtt") && !c.IsSet("wan-jitter") {
		return nil, nil
	}
	bw, rtt, jit := c.String("wan-bandwidth"), c.String("wan-rtt"), c.String("wan-jitter")
	if bw == "" {
		bw = "unlimited"
	}
	if rtt == "" {
		rtt = "0s"
	}
	if jit == "" {
		jit = "0s"
	}
	l, err := wanlink.ParseConfig(bw, rtt, jit)
	if err != nil {
		return nil, withCode(ExitUsage, fmt.Errorf("--wan-*: %w", err))
	}
	return &l, nil
}

// wanTransport builds the WAN path the flags ask for, or returns nil when
// they ask for none. Without --tunnel-peer the dest end runs here, with a
// fresh pre-shared key, unless authentication flags say otherwise.
func wanTransport(c *cli.Context, e *env, dir string) (migrate.Transport, string, error) {
	link, err := wanLink(c)
	if err != nil {
		return nil, "", err
	}
	peer := c.String("tunnel-peer") // flags a command lacks read as empty
	auth, given, err := tunnelAuth(c, e, "source")
	if err != nil {
		return nil, "", err
	}
	codecAsked := c.String("codec") == "on"
	if link == nil && peer == "" && !given && !codecAsked {
		if c.String("codec") == "" && (c.String("codec-cache") != "" || c.String("codec-seed") != "" || c.IsSet("codec-effort")) {
			return nil, "", withCode(ExitUsage, fmt.Errorf("--codec-cache/--codec-effort/--codec-seed: the codec runs in the tunnel; give --codec on or a --wan-* flag"))
		}
		return nil, "", nil
	}
	codec, err := codecFlags(c, true)
	if err != nil {
		return nil, "", err
	}
	if peer != "" && c.String("codec-seed") != "" {
		return nil, "", withCode(ExitUsage, fmt.Errorf("--codec-seed is kept by the dest end: give it to vmigrate tunnel dest on %s", peer))
	}
	cfg := wanpath.Config{Dir: dir, Link: link, Peer: peer, Tunnel: auth, Log: e.log}
	if codec != nil {
		cfg.Codec = codec // not a typed nil in the interface
	}
	if cfg.DiskCodec, cfg.DiskIndex, err = diskCodecFlags(c, e, peer != ""); err != nil {
		return nil, "", err
	}
	switch {
	case peer != "" && !given:
		return nil, "", withCode(ExitUsage, fmt.Errorf("--tunnel-peer needs --psk-file, --tls-ca/--tls-cert/--tls-key or --insecure"))
	case peer == "" && !given:
		key, err := tunnel.GenerateKey()
		if err != nil {
			return nil, "", err
		}
		cfg.Tunnel.PSK = key
		cfg.DestTunnel = cfg.Tunnel
	case peer == "" && auth.Certs != nil:
		return nil, "", withCode(ExitUsage, fmt.Errorf("certificates authenticate a remote dest end: give --tunnel-peer, or use --psk-file"))
	case peer == "":
		cfg.DestTunnel = auth
	}
	p, err := wanpath.New(cfg)
	if err != nil {
		return nil, "", withCode(ExitUsage, err)
	}
	desc := "tunnel"
	if codec != nil {
		desc += " with the page codec"
	}
	if cfg.DiskCodec != nil && diskAsked(c) {
		desc += ", the block codec"
		if cfg.DiskIndex != nil {
			desc += " and a neighbour index"
		}
	}
	if link != nil {
		desc += " over an emulated " + link.String() + " link"
	}
	e.log.Debug("migration path", zap.String("path", desc))
	return p, desc, nil
}

// diskAsked says whether the command moves disks.
func diskAsked(c *cli.Context) bool {
	return len(c.StringSlice("disk")) > 0 || c.String("disk-size") != "" || c.String("disk-image") != ""
}

// diskCodecFlags reads --disk-codec, --disk-block-size and --disk-index:
// the block codec's configuration (nil when off) and the destination's
// index, opened (nil without one). remote: the dest end runs elsewhere.
func diskCodecFlags(c *cli.Context, e *env, remote bool) (*blockcodec.Config, blockcodec.Neighbours, error) {
	switch c.String("disk-codec") {
	case "off":
		for _, f := range []string{"disk-block-size", "disk-index"} {
			if c.IsSet(f) {
				return nil, nil, withCode(ExitUsage, fmt.Errorf("--%s needs --disk-codec on", f))
			}
		}
		return nil, nil, nil
	case "on", "": // commands without disk flags read ""
	default:
		return nil, nil, withCode(ExitUsage, fmt.Errorf("--disk-codec %q: want on or off", c.String("disk-codec")))
	}
	cfg := blockcodec.Config{BlockSize: blockcodec.DefaultBlockSize, Deflate: c.String("codec-effort") == "max", Log: e.log.Named("blockcodec")}
	if v := c.String("disk-block-size"); v != "" {
		n, err := workload.ParseSize(v)
		if err != nil {
			return nil, nil, withCode(ExitUsage, fmt.Errorf("--disk-block-size %q: %w", v, err))
		}
		cfg.BlockSize = int(n)
	}
	if _, err := blockcodec.New(cfg); err != nil {
		return nil, nil, withCode(ExitUsage, fmt.Errorf("--disk-block-size: %w", err))
	}
	path := c.String("disk-index")
	if path == "" {
		return &cfg, nil, nil
	}
	if remote {
		return nil, nil, withCode(ExitUsage, fmt.Errorf("--disk-index is the dest end's: give it to vmigrate tunnel dest on %s", c.String("tunnel-peer")))
	}
	idx, err := blockindex.Open(path)
	if err != nil {
		return nil, nil, withCode(ExitUsage, fmt.Errorf("--disk-index: %w", err))
	}
	for _, st := range idx.Check() {
		e.log.Warn("neighbour index: image left out", zap.String("image", st.Path), zap.String("why", st.Reason))
	}
	return &cfg, idx, nil
}

// learnImages adds the images a completed migration wrote to the
// destination's neighbour index, when a dest end here used one: the next
// migration of a sibling finds their blocks. A failure is logged: the
// migration itself succeeded.
func learnImages(e *env, t migrate.Transport, disks []blockmirror.DiskStats) {
	p, ok := t.(*wanpath.Path)
	if !ok {
		return
	}
	idx, ok := p.DiskIndex().(*blockindex.Index)
	if !ok {
		return
	}
	for _, d := range disks {
		if d.Target == "" {
			continue
		}
		if err := idx.Add(e.ctx, d.Target); err != nil {
			e.log.Warn("neighbour index: add the migrated image", zap.String("image", d.Target), zap.Error(err))
			return
		}
	}
	if err := idx.Save(); err != nil {
		e.log.Warn("neighbour index: save", zap.String("index", idx.Path()), zap.Error(err))
	}
}
