package command

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/vmigrate/vmigrate/blockcodec"
	"github.com/vmigrate/vmigrate/guest/workload"
	"github.com/vmigrate/vmigrate/pagecodec"
	"github.com/vmigrate/vmigrate/tunnel"
	"github.com/vmigrate/vmigrate/wanpath"
)

// requireAuth reads the authentication flags and insists on one.
func requireAuth(c *cli.Context, role string) (tunnel.Config, error) {
	cfg, ok, err := tunnelAuth(c, getEnv(c), role)
	if err != nil {
		return cfg, err
	}
	if !ok {
		return cfg, withCode(ExitUsage, fmt.Errorf("tunnel %s: give --psk-file, --tls-ca/--tls-cert/--tls-key, or --insecure", role))
	}
	return cfg, nil
}

func tunnelCommand() *cli.Command {
	auth := func() []cli.Flag { return tunnelFlags()[1:] } // all but --tunnel-peer
	return &cli.Command{
		Name:  "tunnel",
		Usage: "the authenticated, encrypted tunnel that carries migration streams between hosts",
		Description: `One TLS 1.3 connection between the hosts carries every stream of a migration as
a channel ("ram" now). Both ends authenticate: with a pre-shared key (keygen)
or with certificates from one CA (certs). The protocol: tunnel/PROTOCOL.md.

  on the destination host:  vmigrate tunnel dest --listen :7000 --forward unix:/run/dst-incoming.sock --psk-file k
  on the source host:       vmigrate tunnel source --listen unix:/run/mig.sock --peer desthost:7000 --psk-file k
  then the source QEMU migrates to unix:/run/mig.sock. (vmigrate run --tunnel-peer does the source side itself.)`,
		Subcommands: []*cli.Command{
			{
				Name:  "source",
				Usage: "accept the source QEMU's migration stream locally and carry it to the dest end",
				Flags: append([]cli.Flag{
					&cli.StringFlag{Name: "listen", Required: true, Usage: "where the source QEMU connects: unix:PATH or HOST:PORT"},
					&cli.StringFlag{Name: "peer", Required: true, Usage: "the dest end, HOST:PORT"},
					&cli.StringFlag{Name: "codec", Value: "on", Usage: "page codec on the stream: on|off (the dest end always understands it)"},
				}, append(encoderFlags(), auth()...)...),
				Action: func(c *cli.Context) error {
					e := getEnv(c)
					cfg, err := requireAuth(c, "source")
					if err != nil {
						return err
					}
					codec, err := codecFlags(c, true)
					if err != nil {
						return err
					}
					port := tunnel.Port{Name: wanpath.ChannelRAM, Addr: c.String("listen")}
					if codec != nil {
						port.Codec = codec
					}
					fmt.Fprintf(e.stdout, "tunnel source: %s -> %s\n", c.String("listen"), c.String("peer"))
					return tunnel.RunSource(e.ctx, tunnel.SourceConfig{
						Ports: []tunnel.Port{port},
						Peer:  c.String("peer"), Tunnel: cfg, Logger: e.log,
					})
				},
			},
			{
				Name:  "dest",
				Usage: "accept tunnel connections and deliver each stream to the destination QEMU",
				Flags: append([]cli.Flag{
					&cli.StringFlag{Name: "listen", Required: true, Usage: "the tunnel's address, HOST:PORT"},
					&cli.StringFlag{Name: "forward", Required: true, Usage: "the destination QEMU's incoming address: unix:PATH or HOST:PORT"},
					&cli.StringFlag{Name: "forward-nbd", Usage: "where disk channels go: the destination's NBD server, unix:PATH (for run --domain --disk: nbd.sock beside the migration socket)"},
					&cli.StringFlag{Name: "codec-max-cache", Value: "16G", Usage: "the largest page cache a source may ask this end to keep per stream"},
					&cli.StringFlag{Name: "codec-seed", Usage: "keep the pages of the last stream received in this file and offer them to the next one (a retried or repeated migration sends them as references)"},
					&cli.StringFlag{Name: "disk-index", Usage: "the neighbour index of the disk images on this host (vmigrate index build): disk blocks it holds cross the link as references; re-read when the file changes, images changed since they were hashed are left out"},
				}, auth()...),
				Action: func(c *cli.Context) error {
					e := getEnv(c)
					cfg, err := requireAuth(c, "dest")
					if err != nil {
						return err
					}
					maxCache, err := workload.ParseSize(c.String("codec-max-cache"))
					if err != nil || maxCache < pagecodec.PageSize {
						return withCode(ExitUsage, fmt.Errorf("--codec-max-cache %q: want a size of at least 4K", c.String("codec-max-cache")))
					}
					codec := pagecodec.New(pagecodec.Config{MaxCacheBytes: int64(maxCache), SeedFile: c.String("codec-seed")})
					defer codec.Close() // waits for the seed file
					// The block codec is always there: a source with
					// --disk-codec on needs it, with or without an index.
					bcfg := blockcodec.Config{Log: e.log.Named("blockcodec")}
					if p := c.String("disk-index"); p != "" {
						idx, err := openLiveIndex(p, e.log.Named("index"))
						if err != nil {
							return withCode(ExitUsage, fmt.Errorf("--disk-index: %w", err))
						}
						defer idx.Close()
						bcfg.Index = idx
					}
					disks, err := blockcodec.New(bcfg)
					if err != nil {
						return withCode(ExitUsage, fmt.Errorf("--disk-index: %w", err))
					}
					fmt.Fprintf(e.stdout, "tunnel dest: %s -> %s\n", c.String("listen"), c.String("forward"))
					return tunnel.RunDest(e.ctx, tunnel.DestConfig{
						Listen:  c.String("listen"),
						Codecs:  []tunnel.StreamCodec{codec, disks},
						Forward: destForward(c.String("forward"), c.String("forward-nbd")),
						Tunnel:  cfg, Logger: e.log,
					})
				},
			},
			{
				Name:      "keygen",
				Usage:     "write a new pre-shared key to FILE (copy it to both hosts)",
				ArgsUsage: "FILE",
				Action: func(c *cli.Context) error {
					if c.Args().Len() != 1 {
						return withCode(ExitUsage, fmt.Errorf("tunnel keygen: want one FILE"))
					}
					key, err := tunnel.GenerateKey()
					if err != nil {
						return err
					}
					return tunnel.WriteKey(c.Args().First(), key)
				},
			},
			{
				Name:      "certs",
				Usage:     "write a CA and certificates for both ends into DIR (ca.pem, source.pem, source-key.pem, dest.pem, dest-key.pem)",
				ArgsUsage: "DIR",
				Action: func(c *cli.Context) error {
					if c.Args().Len() != 1 {
						return withCode(ExitUsage, fmt.Errorf("tunnel certs: want one DIR"))
					}
					dir := c.Args().First()
					if err := os.MkdirAll(dir, 0o700); err != nil {
						return err
					}
					p := func(n string) string { return filepath.Join(dir, n) }
					if err := tunnel.GenerateCA(p("ca.pem"), p("ca-key.pem")); err != nil {
						return err
					}
					for _, name := range []string{tunnel.SourceName, tunnel.DestName} {
						if err := tunnel.GenerateCert(p("ca.pem"), p("ca-key.pem"), name, p(name+".pem"), p(name+"-key.pem")); err != nil {
							return err
						}
					}
					fmt.Fprintf(getEnv(c).stdout, "wrote %s: give source.pem and source-key.pem to the source host, dest.pem and dest-key.pem to the destination, ca.pem to both; keep ca-key.pem offline\n", dir)
					return nil
				},
			},
		},
	}
}

// destForward sends the RAM channel to the incoming address and, with an
// NBD address, every disk channel ("disk:NAME") to it.
func destForward(incoming, nbd string) func(ctx context.Context, name string) (net.Conn, error) {
	ram := tunnel.ForwardByName(map[string]string{wanpath.ChannelRAM: incoming})
	if nbd == "" {
		return ram
	}
	disk := tunnel.ForwardByName(map[string]string{"nbd": nbd})
	return func(ctx context.Context, name string) (net.Conn, error) {
		if strings.HasPrefix(name, "disk:") {
			return disk(ctx, "nbd")
		}
		return ram(ctx, name)
	}
}
